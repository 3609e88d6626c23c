// Fills a KernelTable with the instantiations of one ISA. Included at the end of each
// kernels_<isa>.cpp, inside its namespace and target region, after the kernels.

#include "quantize_rows.inl"
#include "hadamard_simd.inl"

// n rows of f32 input (already rotated) into encoded rows, bit-identical to encodeRowReference.
template <class S, Storage F>
void encodeRows(const float* in, uint32_t n, uint32_t D, uint32_t G, uint8_t* out, uint32_t outStride) {
  for (uint32_t r = 0; r < n; ++r) {
    encodeRowFast<S, F>(in + static_cast<uint64_t>(r) * D, D, G, out + static_cast<uint64_t>(r) * outStride);
  }
}

template <class S, Storage F>
void decodeRows(const uint8_t* rows, uint32_t n, uint32_t stride, uint32_t D, uint32_t G, float* out) {
  RowDecoder<S, F>::decode(rows, n, stride, D, G, out, nullptr);
}

template <class S>
void halfToFloatArray(const uint16_t* in, float* out, uint64_t n) {
  uint64_t i = 0;
  for (; i + S::W <= n; i += S::W) S::store(out + i, S::loadF16(in + i));
  for (; i < n; ++i) out[i] = S::halfScalar(in[i]);
}

template <class S, Storage K>
void fillValues(KernelTable& t) {
  t.attention[static_cast<int>(K)][0] = &attentionRange<S, K, Storage::kF32>;
  t.attention[static_cast<int>(K)][1] = &attentionRange<S, K, Storage::kF16>;
  t.attention[static_cast<int>(K)][2] = &attentionRange<S, K, Storage::kBF16>;
  t.attention[static_cast<int>(K)][3] = &attentionRange<S, K, Storage::kInt8>;
  t.attention[static_cast<int>(K)][4] = &attentionRange<S, K, Storage::kInt4>;
}

template <class S, Storage K>
void fillFast(KernelTable& t) {
  t.attentionFast[static_cast<int>(K)][0] = &attentionRange<S, K, Storage::kF32, true>;
  t.attentionFast[static_cast<int>(K)][1] = &attentionRange<S, K, Storage::kF16, true>;
  t.attentionFast[static_cast<int>(K)][2] = &attentionRange<S, K, Storage::kBF16, true>;
  t.attentionFast[static_cast<int>(K)][3] = &attentionRange<S, K, Storage::kInt8, true>;
  t.attentionFast[static_cast<int>(K)][4] = &attentionRange<S, K, Storage::kInt4, true>;
}

template <class S>
KernelTable makeTable() {
  KernelTable t;
  t.name = S::name();
  t.width = S::W;
  fillValues<S, Storage::kF32>(t);
  fillValues<S, Storage::kF16>(t);
  fillValues<S, Storage::kBF16>(t);
  fillValues<S, Storage::kInt8>(t);
  fillValues<S, Storage::kInt4>(t);
  fillFast<S, Storage::kInt8>(t);
  fillFast<S, Storage::kInt4>(t);
  t.encode[0] = &encodeRows<S, Storage::kF32>;
  t.encode[1] = &encodeRows<S, Storage::kF16>;
  t.encode[2] = &encodeRows<S, Storage::kBF16>;
  t.encode[3] = &encodeRows<S, Storage::kInt8>;
  t.encode[4] = &encodeRows<S, Storage::kInt4>;
  t.decode[0] = &decodeRows<S, Storage::kF32>;
  t.decode[1] = &decodeRows<S, Storage::kF16>;
  t.decode[2] = &decodeRows<S, Storage::kBF16>;
  t.decode[3] = &decodeRows<S, Storage::kInt8>;
  t.decode[4] = &decodeRows<S, Storage::kInt4>;
  t.halfToFloat = &halfToFloatArray<S>;
  t.accumulateMass = &accumulateMass<S>;
  return t;
}
