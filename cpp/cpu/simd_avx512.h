// AVX-512 (F, BW, VL, DQ) + FMA + F16C, 16 floats per vector. Include only inside a region
// compiled for those instructions (see kernels_avx512.cpp).
#pragma once
#include <immintrin.h>

#include <cstdint>

// The kernels included after this header may use AVX-512 intrinsics directly.
#define KVC_SIMD_AVX512 1

namespace kvc::cpu {

struct SimdAvx512 {
  static constexpr int W = 16;
  using V = __m512;
  static const char* name() { return "avx512"; }
  static float halfScalar(uint16_t h) { return _cvtsh_ss(h); }
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static float reduce(V v) { return _mm512_reduce_add_ps(v); }
  static float reduceMax(V v) { return _mm512_reduce_max_ps(v); }
  // Horizontal sums of four vectors: interleave-and-add within 128-bit lanes (each lane then
  // holds one partial sum per vector), then fold the four lanes.
  static void reduce4(V a, V b, V c, V d, float* out) {
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    const __m512 abcd = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                                      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
    const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1)));
  }
  // out[j * stride + i] = sum(acc[i][j]) * scale + beta[i] for a 4 x 4 tile of dot products
  // (rows i, queries j): reduce4's additions in the same order, with the 128-bit lanes of
  // four queries transposed together so that each query's four logits leave in one store.
  static void storeDots4x4(const V (&acc)[4][4], float scale, const float* beta, float* out, uint32_t stride) {
    __m512 u[4];
    for (int j = 0; j < 4; ++j) {
      const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(acc[0][j], acc[1][j]), _mm512_unpackhi_ps(acc[0][j], acc[1][j]));
      const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(acc[2][j], acc[3][j]), _mm512_unpackhi_ps(acc[2][j], acc[3][j]));
      u[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                           _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
    }
    // Lanes (L0 + L2, L1 + L3) of two queries, then the sum of the two per query.
    const __m512 w01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x44), _mm512_shuffle_f32x4(u[0], u[1], 0xEE));
    const __m512 w23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x44), _mm512_shuffle_f32x4(u[2], u[3], 0xEE));
    const __m512 sums = _mm512_add_ps(_mm512_shuffle_f32x4(w01, w23, 0x88), _mm512_shuffle_f32x4(w01, w23, 0xDD));
    const __m512 logits = _mm512_fmadd_ps(sums, _mm512_set1_ps(scale), _mm512_broadcast_f32x4(_mm_loadu_ps(beta)));
    _mm_storeu_ps(out, _mm512_castps512_ps128(logits));
    _mm_storeu_ps(out + stride, _mm512_extractf32x4_ps(logits, 1));
    _mm_storeu_ps(out + 2 * stride, _mm512_extractf32x4_ps(logits, 2));
    _mm_storeu_ps(out + 3 * stride, _mm512_extractf32x4_ps(logits, 3));
  }
  static V loadF16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static V loadBf16(const uint16_t* p) {
    const __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
  }
  static V loadI8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static V loadU4Lo(const uint8_t* p) {
    const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm512_cvtepi32_ps(_mm512_and_si512(x, _mm512_set1_epi32(0x0F)));
  }
  static V loadU4Hi(const uint8_t* p) {
    const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm512_cvtepi32_ps(_mm512_srli_epi32(x, 4));
  }
  // Both nibble halves of 16 bytes with one widening load (the int4 layout pairs them).
  static void loadU4Pair(const uint8_t* p, V& lo, V& hi) {
    const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    lo = _mm512_cvtepi32_ps(_mm512_and_si512(x, _mm512_set1_epi32(0x0F)));
    hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(x, 4));
  }
  // Lane i < count: the f16 pair (first, second) at p + i * stride as two floats; 0 past count.
  static void gatherHalfPair(const uint8_t* p, uint32_t stride, uint32_t count, V& first, V& second) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(stride)));
    const __mmask16 k = count >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << count) - 1);
    const __m512i x = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, idx, p, 1);
    first = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(x));
    second = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(x, 16)));
  }
  // v[f] lane i = the f16 field f (f < fields <= 4, two bytes each) at p + i * stride as a
  // float, for 16 rows; 0 for rows i >= count. Builds a parameter tile without gathers: one
  // masked load per row reads only the fields' bytes, two rows share 128 bits, and two word
  // permutes transpose rows to lanes.
  static constexpr bool kHalfFields16 = true;
  static void halfFields16(const uint8_t* p, uint32_t stride, uint32_t count, uint32_t fields, V (&v)[4]) {
    const __mmask8 fieldMask = static_cast<__mmask8>((1u << fields) - 1);
    __m128i row[16];
    for (uint32_t i = 0; i < 16; ++i) {
      row[i] = i < count ? _mm_maskz_loadu_epi16(fieldMask, p + static_cast<uint64_t>(i) * stride) : _mm_setzero_si128();
    }
    __m128i two[8];
    for (int i = 0; i < 8; ++i) two[i] = _mm_unpacklo_epi64(row[2 * i], row[2 * i + 1]);
    // Word 4 i + f of lo: field f of row i; of hi: of row 8 + i.
    const __m512i lo = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(two[0]), two[1], 1), two[2], 2), two[3], 3);
    const __m512i hi = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(two[4]), two[5], 1), two[6], 2), two[7], 3);
    // Word k of the permute: field f0 + k / 16 of row k % 16 (index 32 + ... selects hi).
    alignas(64) static const uint16_t kFields01[32] = {0,  4,  8,  12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60,
                                                       1,  5,  9,  13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61};
    const __m512i idx = _mm512_load_si512(kFields01);
    const __m512i f01 = _mm512_permutex2var_epi16(lo, idx, hi);
    v[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(f01));
    v[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(f01, 1));
    if (fields > 2) {
      const __m512i f23 = _mm512_permutex2var_epi16(lo, _mm512_add_epi16(idx, _mm512_set1_epi16(2)), hi);
      v[2] = _mm512_cvtph_ps(_mm512_castsi512_si256(f23));
      v[3] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(f23, 1));
    }
  }
  static void storeF16(uint16_t* p, V v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static void storeBf16(uint16_t* p, V v) {
    const __m512i x = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
  static V exp(V x) {
    const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    f = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), f);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(static_cast<__mmask16>(~underflow), p, _mm512_castsi512_ps(e));
  }
};

}  // namespace kvc::cpu
