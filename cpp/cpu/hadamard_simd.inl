// Vector form of rotateForward (hadamard.h) for a power-of-two head_dim that is a multiple
// of the vector width: y = H diag(signs) x / sqrt(D), bit-identical to the scalar code.
// Every butterfly output is one IEEE add or subtract of the same two inputs, stage by stage
// in the scalar order (len = 1, 2, 4, ...), so the rounding is the same: the in-vector stages
// compute fma(x, ±1, partner), which is exactly a + b in the lower and a - b in the upper
// lanes; the stages of len >= W pair whole vectors.
// Included into an ISA namespace after quantize_rows.inl (which provides QuantLanes and
// the register quantizers that encodeRowRegisters, at the end, combines with the rotation).

template <class S, int W = S::W>
struct HadamardLanes;

#ifdef KVC_QUANT_VECTOR
template <class S>
struct HadamardLanes<S, 16> {
  using V = __m512;
  // Stages len = 1, 2, 4, 8 inside one vector of 16.
  static V inVector(V x) {
    const __m512 s1 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
    const __m512 s2 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
    const __m512 s4 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
    const __m512 s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
    x = _mm512_fmadd_ps(x, s1, _mm512_permute_ps(x, 0xB1));
    x = _mm512_fmadd_ps(x, s2, _mm512_permute_ps(x, 0x4E));
    x = _mm512_fmadd_ps(x, s4, _mm512_shuffle_f32x4(x, x, 0xB1));
    return _mm512_fmadd_ps(x, s8, _mm512_shuffle_f32x4(x, x, 0x4E));
  }
};

template <class S>
struct HadamardLanes<S, 8> {
  using V = __m256;
  // Stages len = 1, 2, 4 inside one vector of 8.
  static V inVector(V x) {
    const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
    const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
    const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
    x = _mm256_fmadd_ps(x, s1, _mm256_permute_ps(x, 0xB1));
    x = _mm256_fmadd_ps(x, s2, _mm256_permute_ps(x, 0x4E));
    return _mm256_fmadd_ps(x, s4, _mm256_permute2f128_ps(x, x, 0x01));
  }
};

// The stages of len >= W on NV vectors: vector j pairs with vector j + LV.
template <class S, int NV, int LV>
KVC_ALWAYS_INLINE void crossStages(typename S::V* v) {
  if constexpr (LV < NV) {
#pragma GCC unroll 16
    for (int i = 0; i < NV; i += 2 * LV) {
#pragma GCC unroll 16
      for (int j = 0; j < LV; ++j) {
        const typename S::V a = v[i + j], b = v[i + j + LV];
        v[i + j] = S::add(a, b);
        v[i + j + LV] = QuantLanes<S>::sub(a, b);
      }
    }
    crossStages<S, NV, 2 * LV>(v);
  }
}

// Rotates NV vectors held in registers (NV is a compile-time constant so that the arrays
// are fully unrolled into registers).
template <class S, int NV>
KVC_ALWAYS_INLINE void rotateRegisters(typename S::V* v, const float* signs, float norm) {
  constexpr int W = S::W;
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) v[i] = HadamardLanes<S>::inVector(S::mul(v[i], S::load(signs + i * W)));
  crossStages<S, NV, 1>(v);
  const typename S::V n = S::set1(norm);
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) v[i] = S::mul(v[i], n);
}

template <class S, int NV, class Load>
void rotateRowRegisters(Load load, const float* signs, float norm, float* out) {
  typename S::V v[NV];
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) v[i] = load(i * S::W);
  rotateRegisters<S, NV>(v, signs, norm);
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) S::store(out + i * S::W, v[i]);
}

// Any power-of-two D that W divides, staged through `out`.
template <class S, class Load>
void rotateRowStaged(Load load, const float* signs, float norm, uint32_t D, float* out) {
  using H = HadamardLanes<S>;
  using L = QuantLanes<S>;
  constexpr uint32_t W = S::W;
  for (uint32_t e = 0; e < D; e += W) S::store(out + e, H::inVector(S::mul(load(e), S::load(signs + e))));
  for (uint32_t len = W; len < D; len <<= 1) {
    for (uint32_t i = 0; i < D; i += 2 * len) {
      for (uint32_t j = i; j < i + len; j += W) {
        const typename S::V a = S::load(out + j), b = S::load(out + j + len);
        S::store(out + j, S::add(a, b));
        S::store(out + j + len, L::sub(a, b));
      }
    }
  }
  const typename S::V n = S::set1(norm);
  for (uint32_t e = 0; e < D; e += W) S::store(out + e, S::mul(S::load(out + e), n));
}

// out[D] = rotated row; load(e) returns the W input floats starting at element e.
// Returns false when D does not suit the vector form (the caller then rotates in scalar).
template <class S, class Load>
bool rotateRowVector(Load load, const float* signs, uint32_t D, float* out) {
  constexpr uint32_t W = S::W;
  if (D % W != 0 || (D & (D - 1)) != 0) return false;
  const float norm = 1.0f / std::sqrt(static_cast<float>(D));  // as rotateForward computes it
  switch (D / W) {
    case 1: rotateRowRegisters<S, 1>(load, signs, norm, out); return true;
    case 2: rotateRowRegisters<S, 2>(load, signs, norm, out); return true;
    case 4: rotateRowRegisters<S, 4>(load, signs, norm, out); return true;
    case 8: rotateRowRegisters<S, 8>(load, signs, norm, out); return true;
    case 16: rotateRowRegisters<S, 16>(load, signs, norm, out); return true;
    default: rotateRowStaged<S>(load, signs, norm, D, out); return true;
  }
}
// Load, rotate (when signs is not null) and quantize one row without leaving registers.
template <class S, Storage F, int NV, int VG>
void encodeRowRegisters(const float* x, const float* signs, float norm, uint8_t* out) {
  typename S::V v[NV];
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) v[i] = S::load(x + i * S::W);
  if (signs) rotateRegisters<S, NV>(v, signs, norm);
  if constexpr (F == Storage::kInt8) int8FromRegisters<S, NV, VG>(v, out);
  else int4FromRegisters<S, NV, VG>(v, out);
}
#endif  // KVC_QUANT_VECTOR
