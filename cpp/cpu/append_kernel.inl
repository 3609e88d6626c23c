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

  TensorWriter(const void* source, const float* s, Storage storage, const KernelTable& kt, const RowCodec& c, uint32_t dim,
               uint32_t bytes)
      : src(source), signs(s), encode(kt.encode[static_cast<int>(storage)]), D(dim), G(c.groupSize), rowBytes(bytes) {
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

// Whether the n input elements at `at` are all finite. f32: x * 0 is NaN exactly for Inf
// and NaN, so one FMA per vector into four accumulators whose sum stays 0 otherwise (no
// branch, nothing the compiler may fold without fast-math); f16: exponent bits all ones.
// appendRowsTyped runs it over each token's input right after encoding it, from L1.
template <class S, InputType In>
bool inputFinite(const void* src, uint64_t at, uint64_t n) {
  if constexpr (In == InputType::kF32) {
    using V = typename S::V;
    constexpr uint32_t W = S::W;
    const float* x = static_cast<const float*>(src) + at;
    const V zero = S::zero();
    V a0 = zero, a1 = zero, a2 = zero, a3 = zero;
    uint64_t e = 0;
    for (; e + 4 * W <= n; e += 4 * W) {
      a0 = S::fma(S::load(x + e), zero, a0);
      a1 = S::fma(S::load(x + e + W), zero, a1);
      a2 = S::fma(S::load(x + e + 2 * W), zero, a2);
      a3 = S::fma(S::load(x + e + 3 * W), zero, a3);
    }
    for (; e + W <= n; e += W) a0 = S::fma(S::load(x + e), zero, a0);
    float tail = 0.0f;
    for (; e < n; ++e) tail += x[e] * 0.0f;
    return S::reduce(S::add(S::add(a0, a1), S::add(a2, a3))) + tail == 0.0f;
  } else {
    const uint8_t* x = static_cast<const uint8_t*>(src) + 2 * at;
    uint32_t bad = 0;
    for (uint64_t e = 0; e < n; ++e) {
      uint16_t bits;
      std::memcpy(&bits, x + 2 * e, 2);
      bad |= (bits & 0x7C00u) == 0x7C00u;
    }
    return bad == 0;
  }
}

// How far ahead of the current row the input is prefetched, in input elements.
constexpr uint64_t kPrefetchFloats = 2048;

// Rows go token by token (the input is token-major, so it is read once, in order), and for
// each token stream by stream into that stream's current block. buf: 64-byte aligned, D floats.
// Returns the index (t * streams + s) of the first row whose keys or values hold a NaN or an
// Inf, or -1. Rows up to its token's were written; the caller discards the whole append
// (the new rows are not visible until the cache commits the new lengths).
template <class S, InputType In>
int64_t appendRowsTyped(const AppendParams& p, const KernelTable& kt, float* buf) {
  const RowCodec& c = p.codec;
  const uint32_t D = c.headDim, VD = c.valueDim ? c.valueDim : D;
  const BlockLayout& L = p.pool.layout;
  const TensorWriter<S, In> keys(p.keys, c.keySigns, c.keyStorage, kt, c, D, L.keyRowBytes);
  const TensorWriter<S, In> values(p.values, c.valueSigns, c.valueStorage, kt, c, VD, L.valueRowBytes);
  const uint64_t inputFloats = static_cast<uint64_t>(p.tokens) * p.streamCount * D;
  const uint32_t inputBytes = p.inputType == InputType::kF16 ? 2 : 4;
  const uint32_t lineStep = 64 / inputBytes;
  for (uint32_t t = 0; t < p.tokens; ++t) {
    for (uint32_t s = 0; s < p.streamCount; ++s) {
      const uint32_t r = static_cast<uint32_t>(p.startRow[s]) + t;
      uint8_t* block = p.pool.base + static_cast<uint64_t>(p.blockTables[s][r / L.blockSize]) * L.blockBytes;
      const uint32_t slot = r % L.blockSize;
      const uint64_t at = (static_cast<uint64_t>(t) * p.streamCount + s) * D;
      const uint64_t vat = (static_cast<uint64_t>(t) * p.streamCount + s) * VD;
      // Keep enough input lines in flight that the quantization's long dependency chains
      // do not stall the stream (the hardware prefetcher alone falls behind).
      if (at + kPrefetchFloats < inputFloats) {
        const uint64_t ahead = at + kPrefetchFloats;
        for (uint32_t e = 0; e < D; e += lineStep) {
          __builtin_prefetch(static_cast<const uint8_t*>(p.keys) + (ahead + e) * inputBytes);
          __builtin_prefetch(static_cast<const uint8_t*>(p.values) + (ahead + e) * inputBytes);
        }
      }
      keys.write(at, buf, block + static_cast<uint64_t>(slot) * L.keyRowBytes);
      values.write(vat, buf, block + L.valuesOffset + static_cast<uint64_t>(slot) * L.valueRowBytes);
      reinterpret_cast<float*>(block + L.betaOffset)[slot] = p.beta ? p.beta[static_cast<uint64_t>(t) * p.streamCount + s] : 0.0f;
      reinterpret_cast<int32_t*>(block + L.positionsOffset)[slot] = p.positions[t];
    }
    // The token's input is checked after its rows were encoded, while it is still in L1: a
    // check before would take the cache misses the encoding otherwise overlaps (+15% on
    // int8 per row, measured). A failing token's rows were written but are never made
    // visible; the slow search for the offending stream runs only then.
    const uint64_t at0 = static_cast<uint64_t>(t) * p.streamCount * D, vat0 = static_cast<uint64_t>(t) * p.streamCount * VD;
    if (!inputFinite<S, In>(p.keys, at0, static_cast<uint64_t>(p.streamCount) * D) ||
        !inputFinite<S, In>(p.values, vat0, static_cast<uint64_t>(p.streamCount) * VD)) {
      for (uint32_t s = 0; s < p.streamCount; ++s) {
        const uint64_t at = at0 + static_cast<uint64_t>(s) * D, vat = vat0 + static_cast<uint64_t>(s) * VD;
        if (!inputFinite<S, In>(p.keys, at, D) || !inputFinite<S, In>(p.values, vat, VD)) {
          return static_cast<int64_t>(t) * p.streamCount + s;
        }
      }
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
