// The fused append of one ISA (ARCHITECTURE §3): each new row is loaded (f32, or f16
// widened), rotated when its tensor is rotated, and encoded straight into its block slot
// while it is in registers / L1; no full-precision copy of the rows is kept. Included into
// an ISA namespace of append_rows.cpp after quantize_rows.inl and hadamard_simd.inl.
// The encoders are the kernel table's (encodeRowFast of the same ISA), so the bytes are
// exactly those of the scalar path (rotateForward + encodeRowReference).

// The f32 row to encode: the input itself, or `buf` holding it widened and / or rotated.
template <class S, InputType In>
const float* prepareRow(const void* src, uint64_t at, const float* signs, uint32_t D, float* buf) {
  if constexpr (In == InputType::kF32) {
    const float* x = static_cast<const float*>(src) + at;
    if (!signs) return x;
#ifdef KVC_QUANT_VECTOR
    if constexpr (S::W > 1) {
      if (rotateRowVector<S>([x](uint32_t e) { return S::load(x + e); }, signs, D, buf)) return buf;
    }
#endif
    std::memcpy(buf, x, 4ull * D);
  } else {
    const uint16_t* h = static_cast<const uint16_t*>(src) + at;
#ifdef KVC_QUANT_VECTOR
    if constexpr (S::W > 1) {
      if (signs && rotateRowVector<S>([h](uint32_t e) { return S::loadF16(h + e); }, signs, D, buf)) return buf;
    }
#endif
    uint32_t e = 0;
    for (; e + S::W <= D; e += S::W) S::store(buf + e, S::loadF16(h + e));
    for (; e < D; ++e) buf[e] = S::halfScalar(h[e]);
    if (!signs) return buf;
  }
  rotateForward(buf, signs, D);
  return buf;
}

// How one tensor (keys or values) of the append is written: a register kernel that loads,
// rotates and quantizes in one go, or the prepared row handed to the table's encoder.
template <class S, InputType In>
struct TensorWriter {
  const void* src;
  const float* signs;
  EncodeRowsFn encode;
  uint32_t D, G, rowBytes;
#ifdef KVC_QUANT_VECTOR
  RegisterRowFn fused = nullptr;
  float norm = 0.0f;
#endif

  TensorWriter(const void* source, const float* s, Storage storage, const KernelTable& kt, const RowCodec& c, uint32_t bytes)
      : src(source), signs(s), encode(kt.encode[static_cast<int>(storage)]), D(c.headDim), G(c.groupSize), rowBytes(bytes) {
#ifdef KVC_QUANT_VECTOR
    if constexpr (S::W > 1) fused = registerRowKernel<S>(storage, D, G);
    norm = 1.0f / std::sqrt(static_cast<float>(D));  // as rotateForward computes it
#endif
  }

  void write(uint64_t at, float* buf, uint8_t* dst) const {
#ifdef KVC_QUANT_VECTOR
    if (fused) {
      const float* x;
      if constexpr (In == InputType::kF32) {
        x = static_cast<const float*>(src) + at;
      } else {
        const uint16_t* h = static_cast<const uint16_t*>(src) + at;
        for (uint32_t e = 0; e < D; e += S::W) S::store(buf + e, S::loadF16(h + e));
        x = buf;
      }
      return fused(x, signs, norm, dst);
    }
#endif
    encode(prepareRow<S, In>(src, at, signs, D, buf), 1, D, G, dst, rowBytes);
  }
};

// Whether the D input elements at `at` are all finite (exponent bits not all ones). Branch
// free so that the compiler vectorizes it for this ISA; the row is in L1 when it is encoded
// right after, so the check costs a few instructions per vector (see appendRowsTyped).
template <InputType In>
bool rowFinite(const void* src, uint64_t at, uint32_t D) {
  uint32_t bad = 0;
  if constexpr (In == InputType::kF32) {
    const uint8_t* x = static_cast<const uint8_t*>(src) + 4 * at;
    for (uint32_t e = 0; e < D; ++e) {
      uint32_t bits;
      std::memcpy(&bits, x + 4ull * e, 4);
      bad |= (bits & 0x7F800000u) == 0x7F800000u;
    }
  } else {
    const uint8_t* x = static_cast<const uint8_t*>(src) + 2 * at;
    for (uint32_t e = 0; e < D; ++e) {
      uint16_t bits;
      std::memcpy(&bits, x + 2ull * e, 2);
      bad |= (bits & 0x7C00u) == 0x7C00u;
    }
  }
  return bad == 0;
}

// How far ahead of the current row the input is prefetched, in input elements.
constexpr uint64_t kPrefetchFloats = 2048;

// Rows go token by token (the input is token-major, so it is read once, in order), and for
// each token stream by stream into that stream's current block. buf: 64-byte aligned, D floats.
// Returns the index (t * streams + s) of the first row whose keys or values hold a NaN or an
// Inf, or -1. Rows before it were written; the caller discards the whole append (the new
// rows are not visible until the cache commits the new lengths).
template <class S, InputType In>
int64_t appendRowsTyped(const AppendParams& p, const KernelTable& kt, float* buf) {
  const RowCodec& c = p.codec;
  const uint32_t D = c.headDim;
  const BlockLayout& L = p.pool.layout;
  const TensorWriter<S, In> keys(p.keys, c.keySigns, c.keyStorage, kt, c, L.keyRowBytes);
  const TensorWriter<S, In> values(p.values, c.valueSigns, c.valueStorage, kt, c, L.valueRowBytes);
  const uint64_t inputFloats = static_cast<uint64_t>(p.tokens) * p.streamCount * D;
  const uint32_t inputBytes = p.inputType == InputType::kF16 ? 2 : 4;
  const uint32_t lineStep = 64 / inputBytes;
  for (uint32_t t = 0; t < p.tokens; ++t) {
    for (uint32_t s = 0; s < p.streamCount; ++s) {
      const uint32_t r = static_cast<uint32_t>(p.startRow[s]) + t;
      uint8_t* block = p.pool.base + static_cast<uint64_t>(p.blockTables[s][r / L.blockSize]) * L.blockBytes;
      const uint32_t slot = r % L.blockSize;
      const uint64_t at = (static_cast<uint64_t>(t) * p.streamCount + s) * D;
      // Keep enough input lines in flight that the quantization's long dependency chains
      // do not stall the stream (the hardware prefetcher alone falls behind).
      if (at + kPrefetchFloats < inputFloats) {
        const uint64_t ahead = at + kPrefetchFloats;
        for (uint32_t e = 0; e < D; e += lineStep) {
          __builtin_prefetch(static_cast<const uint8_t*>(p.keys) + (ahead + e) * inputBytes);
          __builtin_prefetch(static_cast<const uint8_t*>(p.values) + (ahead + e) * inputBytes);
        }
      }
      if (!rowFinite<In>(p.keys, at, D) || !rowFinite<In>(p.values, at, D)) {
        return static_cast<int64_t>(t) * p.streamCount + s;
      }
      keys.write(at, buf, block + static_cast<uint64_t>(slot) * L.keyRowBytes);
      values.write(at, buf, block + L.valuesOffset + static_cast<uint64_t>(slot) * L.valueRowBytes);
      reinterpret_cast<float*>(block + L.betaOffset)[slot] = p.beta ? p.beta[static_cast<uint64_t>(t) * p.streamCount + s] : 0.0f;
      reinterpret_cast<int32_t*>(block + L.positionsOffset)[slot] = p.positions[t];
    }
  }
  return -1;
}

// kt: the table of this ISA (its encoders run on the prepared rows). Returns as appendRowsTyped.
template <class S>
int64_t appendRowsIsa(const AppendParams& p, const KernelTable& kt, float* buf) {
  if (p.inputType == InputType::kF16) return appendRowsTyped<S, InputType::kF16>(p, kt, buf);
  return appendRowsTyped<S, InputType::kF32>(p, kt, buf);
}
