// Vector row encoders for every storage format: int8 (symmetric, absmax / 127 per group)
// and int4 (asymmetric, (max - min) / 15 and min per group) group quantization, and the
// plain f32 / f16 / bf16 conversions. Bit-identical to encodeRowReference for every input
// that holds no NaN (tests: test/quantization/simd-bit-exact.test.ts), which is why every
// step below repeats the reference's arithmetic: the f16-rounded scale is computed by a
// division, rounded with the F16C conversion (nearest even, like floatToHalf), widened
// back, and the elements are multiplied by 1 / scale and rounded to nearest even (the
// default MXCSR mode, like nearbyint); clamps come before the rounding, which gives the
// same integers and maps NaN products to the upper bound as fmin/fmax do.
//
// Included into an ISA namespace after its Simd traits (kernel_instances.inl, and the
// fused append in append_rows.cpp). The vector code is only compiled where <immintrin.h>
// was included before the target region; the portable width-1 instantiation calls the
// scalar reference. Layouts: kvc/formats.h.

// Lane helpers the Simd traits do not have: |x|, min, the float -> int8 / nibble-pair
// packing. One partial specialization per vector width, instantiated only in its ISA's
// region.
template <class S, int W = S::W>
struct QuantLanes;

#if defined(_IMMINTRIN_H_INCLUDED) || defined(__IMMINTRIN_H)
#define KVC_QUANT_VECTOR 1
// The register kernels pass whole rows as arrays of vectors: they must inline into one
// function, or the arrays go through the stack.
#define KVC_ALWAYS_INLINE inline __attribute__((always_inline))

template <class S>
struct QuantLanes<S, 16> {
  using V = __m512;
  static V abs(V x) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF))); }
  // Operand order matters: vminps / vmaxps return the second operand when either is NaN.
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static float reduceMin(V v) { return _mm512_reduce_min_ps(v); }
  // Lane-wise max / min of the four 128-bit quarters.
  static __m128 quadMax(V a) {
    const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    return _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  }
  static __m128 quadMin(V a) {
    const __m256 h = _mm256_min_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    return _mm_min_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  }
  static V broadcastLane(__m128 q, int lane) {
    return _mm512_permutexvar_ps(_mm512_set1_epi32(lane), _mm512_castps128_ps512(q));
  }
  // 16 floats holding integers in [-127, 127] -> 16 bytes (round to nearest even).
  static void storeBytes(uint8_t* p, V codes) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(codes)));
  }
  // byte j = lo[j] | hi[j] << 4 for codes in [0, 15].
  static void storeNibbles(uint8_t* p, V lo, V hi) {
    const __m512i b = _mm512_or_si512(_mm512_cvtps_epi32(lo), _mm512_slli_epi32(_mm512_cvtps_epi32(hi), 4));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(b));
  }
};

template <class S>
struct QuantLanes<S, 8> {
  using V = __m256;
  static V abs(V x) { return _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7FFFFFFF))); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static float reduceMin(V v) {
    __m128 s = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_min_ps(s, _mm_movehl_ps(s, s));
    s = _mm_min_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static __m128 quadMax(V a) { return _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1)); }
  static __m128 quadMin(V a) { return _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1)); }
  static V broadcastLane(__m128 q, int lane) {
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(q), _mm256_set1_epi32(lane));
  }
  // 8 floats holding integers in [-127, 127] -> 8 bytes (round to nearest even).
  static void storeBytes(uint8_t* p, V codes) {
    const __m256i x = _mm256_cvtps_epi32(codes);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
  }
  static void storeNibbles(uint8_t* p, V lo, V hi) {
    const __m256i b = _mm256_or_si256(_mm256_cvtps_epi32(lo), _mm256_slli_epi32(_mm256_cvtps_epi32(hi), 4));
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
  }
};

// A minimum (or maximum) of zero: the reference's fmin / fmax scan, as GCC compiles it
// (operands swapped, ties keep the earlier value), ends with the sign of the group's first
// zero, while a vector reduction picks an arbitrary one. Equal values differ in their bits
// only for zeros, so only they need this rule (see the bit-exact tests).
inline float firstZero(const float* x, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    if (x[i] == 0.0f) return x[i];
  }
  return 0.0f;
}

// Scales of up to 8 groups at once: bits = f16(value / divisor), inv = 1 / f16 value (0 when
// the scale is 0), exactly as the reference computes them one by one. (A template only so
// that it is compiled in the vector regions alone.)
template <class S>
void f16Scales(const float* value, float divisor, uint16_t* bits, float* inv) {
  // Clamped to the f16 range before rounding, as clampToHalfRange in the reference.
  const __m256 limit = _mm256_set1_ps(kHalfMax);
  const __m256 scaled = _mm256_max_ps(
      _mm256_min_ps(_mm256_div_ps(_mm256_loadu_ps(value), _mm256_set1_ps(divisor)), limit), _mm256_sub_ps(_mm256_setzero_ps(), limit));
  const __m128i h = _mm256_cvtps_ph(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 scale = _mm256_cvtph_ps(h);
  const __m256 positive = _mm256_cmp_ps(scale, _mm256_setzero_ps(), _CMP_GT_OQ);
  _mm256_storeu_ps(inv, _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), scale), positive));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(bits), h);
}

// int8 row: q[D] then f16 scale[D / G]. Needs W | G.
template <class S>
void quantizeInt8Vector(const float* x, uint32_t D, uint32_t G, uint8_t* out) {
  using V = typename S::V;
  using L = QuantLanes<S>;
  constexpr uint32_t W = S::W;
  uint16_t* scales = reinterpret_cast<uint16_t*>(out + D);
  const uint32_t groups = D / G;
  for (uint32_t g0 = 0; g0 < groups; g0 += 8) {
    const uint32_t n = groups - g0 < 8 ? groups - g0 : 8;
    float absmax[8] = {}, inv[8];
    uint16_t bits[8];
    for (uint32_t g = 0; g < n; ++g) {
      const float* xg = x + (g0 + g) * G;
      V m = S::zero();  // NaN elements are skipped as fmax skips them: max(|x|, m) keeps m
      for (uint32_t e = 0; e < G; e += W) m = S::max(L::abs(S::load(xg + e)), m);
      absmax[g] = S::reduceMax(m);
    }
    f16Scales<S>(absmax, 127.0f, bits, inv);
    for (uint32_t g = 0; g < n; ++g) {
      const float* xg = x + (g0 + g) * G;
      uint8_t* qg = out + (g0 + g) * G;
      const V iv = S::set1(inv[g]), hi = S::set1(127.0f), lo = S::set1(-127.0f);
      for (uint32_t e = 0; e < G; e += W) L::storeBytes(qg + e, S::max(L::min(S::mul(S::load(xg + e), iv), hi), lo));
    }
    std::memcpy(scales + g0, bits, 2 * n);
  }
  const uint32_t used = D + 2 * groups;
  std::memset(out + used, 0, rowBytes(Storage::kInt8, D, G) - used);
}

// int4 row: nibbles[D / 2] then (f16 scale, f16 min)[D / G]; byte j of a group holds
// element j (low nibble) and element j + G/2 (high nibble). Needs 2W | G.
template <class S>
void quantizeInt4Vector(const float* x, uint32_t D, uint32_t G, uint8_t* out) {
  using V = typename S::V;
  using L = QuantLanes<S>;
  constexpr uint32_t W = S::W;
  uint16_t* params = reinterpret_cast<uint16_t*>(out + D / 2);
  const uint32_t groups = D / G, half = G / 2;
  for (uint32_t g0 = 0; g0 < groups; g0 += 8) {
    const uint32_t n = groups - g0 < 8 ? groups - g0 : 8;
    float lo[8] = {}, range[8] = {}, inv[8], unused[8];
    uint16_t scaleBits[8], minBits[8];
    for (uint32_t g = 0; g < n; ++g) {
      const float* xg = x + (g0 + g) * G;
      V mn = S::load(xg), mx = mn;
      for (uint32_t e = W; e < G; e += W) {
        const V v = S::load(xg + e);
        mn = L::min(v, mn);
        mx = S::max(v, mx);
      }
      float l = L::reduceMin(mn), h = S::reduceMax(mx);
      if (l == 0.0f) l = firstZero(xg, G);
      if (h == 0.0f) h = firstZero(xg, G);
      lo[g] = l;
      range[g] = h - l;
    }
    f16Scales<S>(range, 15.0f, scaleBits, inv);
    f16Scales<S>(lo, 1.0f, minBits, unused);
    const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(scaleBits));
    const __m128i m = _mm_loadu_si128(reinterpret_cast<const __m128i*>(minBits));
    uint16_t pairs[16];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pairs), _mm_unpacklo_epi16(s, m));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pairs + 8), _mm_unpackhi_epi16(s, m));
    for (uint32_t g = 0; g < n; ++g) {
      const float* xg = x + (g0 + g) * G;
      uint8_t* bytes = out + (g0 + g) * half;
      const V iv = S::set1(inv[g]), mnv = S::set1(S::halfScalar(minBits[g]));
      const V top = S::set1(15.0f), bottom = S::zero();
      for (uint32_t e = 0; e < half; e += W) {
        const V a = S::max(L::min(S::mul(L::sub(S::load(xg + e), mnv), iv), top), bottom);
        const V b = S::max(L::min(S::mul(L::sub(S::load(xg + e + half), mnv), iv), top), bottom);
        L::storeNibbles(bytes + e, a, b);
      }
    }
    std::memcpy(params + 2 * g0, pairs, 4 * n);
  }
  const uint32_t used = D / 2 + 4 * groups;
  std::memset(out + used, 0, rowBytes(Storage::kInt4, D, G) - used);
}

// ---- Whole rows in registers: NV vectors per row, VG vectors per group (compile time) ----

// [max a, max b, max c, max d] of four 4-lane vectors (a transpose and reduce).
inline __m128 reduce4Max(__m128 a, __m128 b, __m128 c, __m128 d) {
  const __m128 ab = _mm_max_ps(_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
  const __m128 cd = _mm_max_ps(_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
  return _mm_max_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab));
}
inline __m128 reduce4Min(__m128 a, __m128 b, __m128 c, __m128 d) {
  const __m128 ab = _mm_min_ps(_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
  const __m128 cd = _mm_min_ps(_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
  return _mm_min_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab));
}

// f16 bits of value / divisor (4 lanes), its f16 value, and 1 / that (0 where it is 0).
inline __m128i f16Scale4(__m128 value, float divisor, __m128* inv) {
  const __m128 limit = _mm_set1_ps(kHalfMax);  // clampToHalfRange, as in the reference
  const __m128 scaled = _mm_max_ps(_mm_min_ps(_mm_div_ps(value, _mm_set1_ps(divisor)), limit), _mm_sub_ps(_mm_setzero_ps(), limit));
  const __m128i h = _mm_cvtps_ph(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m128 scale = _mm_cvtph_ps(h);
  *inv = _mm_and_ps(_mm_div_ps(_mm_set1_ps(1.0f), scale), _mm_cmpgt_ps(scale, _mm_setzero_ps()));
  return h;
}

template <class S, int NV, int VG>
KVC_ALWAYS_INLINE void int8FromRegisters(const typename S::V* v, uint8_t* out) {
  using V = typename S::V;
  using L = QuantLanes<S>;
  constexpr int W = S::W, NG = NV / VG, G = VG * W;
  uint16_t* scales = reinterpret_cast<uint16_t*>(out + NV * W);
#pragma GCC unroll 4
  for (int c = 0; c < NG; c += 4) {
    __m128 q[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      if (c + k < NG) {
        V a = S::zero();  // max(|x|, a) keeps a for NaN x, as fmax does
#pragma GCC unroll 16
        for (int j = 0; j < VG; ++j) a = S::max(L::abs(v[(c + k) * VG + j]), a);
        q[k] = L::quadMax(a);
      } else {
        q[k] = _mm_setzero_ps();
      }
    }
    __m128 inv;
    const __m128i h = f16Scale4(reduce4Max(q[0], q[1], q[2], q[3]), 127.0f, &inv);
    if (c + 4 <= NG) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(scales + c), h);
    } else {
      uint16_t bits[8];
      _mm_storeu_si128(reinterpret_cast<__m128i*>(bits), h);
      std::memcpy(scales + c, bits, 2 * (NG - c));
    }
    const V hi = S::set1(127.0f), lo = S::set1(-127.0f);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      if (c + k >= NG) break;
      const V iv = L::broadcastLane(inv, k);
#pragma GCC unroll 16
      for (int j = 0; j < VG; ++j) {
        const int i = (c + k) * VG + j;
        L::storeBytes(out + i * W, S::max(L::min(S::mul(v[i], iv), hi), lo));
      }
    }
  }
  constexpr uint32_t used = NV * W + 2 * NG;
  std::memset(out + used, 0, rowBytes(Storage::kInt8, NV * W, G) - used);
}

template <class S, int NV, int VG>
KVC_ALWAYS_INLINE void int4FromRegisters(const typename S::V* v, uint8_t* out) {
  using V = typename S::V;
  using L = QuantLanes<S>;
  constexpr int W = S::W, NG = NV / VG, G = VG * W, HV = VG / 2;
  uint16_t* params = reinterpret_cast<uint16_t*>(out + NV * W / 2);
#pragma GCC unroll 4
  for (int c = 0; c < NG; c += 4) {
    __m128 qlo[4], qhi[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const int g = c + k < NG ? c + k : c;  // a missing group repeats the first one
      V mn = v[g * VG], mx = mn;
#pragma GCC unroll 16
      for (int j = 1; j < VG; ++j) {
        mn = L::min(v[g * VG + j], mn);
        mx = S::max(v[g * VG + j], mx);
      }
      qlo[k] = L::quadMin(mn);
      qhi[k] = L::quadMax(mx);
    }
    __m128 lo = reduce4Min(qlo[0], qlo[1], qlo[2], qlo[3]);
    __m128 hi = reduce4Max(qhi[0], qhi[1], qhi[2], qhi[3]);
    const int zeros = _mm_movemask_ps(_mm_or_ps(_mm_cmpeq_ps(lo, _mm_setzero_ps()), _mm_cmpeq_ps(hi, _mm_setzero_ps())));
    if (__builtin_expect(zeros != 0, 0)) {
      // A zero minimum or maximum takes the sign of the group's first zero (see firstZero).
      alignas(16) float l4[4], h4[4], x[G];
      _mm_store_ps(l4, lo);
      _mm_store_ps(h4, hi);
      for (int k = 0; k < 4 && c + k < NG; ++k) {
        if (!(zeros & (1 << k))) continue;
        for (int j = 0; j < VG; ++j) S::store(x + j * W, v[(c + k) * VG + j]);
        if (l4[k] == 0.0f) l4[k] = firstZero(x, G);
        if (h4[k] == 0.0f) h4[k] = firstZero(x, G);
      }
      lo = _mm_load_ps(l4);
      hi = _mm_load_ps(h4);
    }
    __m128 inv, unused;
    const __m128i scaleBits = f16Scale4(_mm_sub_ps(hi, lo), 15.0f, &inv);
    const __m128i minBits = f16Scale4(lo, 1.0f, &unused);
    const __m128 mnq = _mm_cvtph_ps(minBits);
    const __m128i pairs = _mm_unpacklo_epi16(scaleBits, minBits);  // (scale, min) x 4 groups
    if (c + 4 <= NG) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(params + 2 * c), pairs);
    } else {
      uint16_t bits[8];
      _mm_storeu_si128(reinterpret_cast<__m128i*>(bits), pairs);
      std::memcpy(params + 2 * c, bits, 4 * (NG - c));
    }
    const V top = S::set1(15.0f), bottom = S::zero();
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      if (c + k >= NG) break;
      const V iv = L::broadcastLane(inv, k), mv = L::broadcastLane(mnq, k);
      uint8_t* bytes = out + (c + k) * (G / 2);
#pragma GCC unroll 8
      for (int j = 0; j < HV; ++j) {
        const int i = (c + k) * VG + j;
        const V a = S::max(L::min(S::mul(L::sub(v[i], mv), iv), top), bottom);
        const V b = S::max(L::min(S::mul(L::sub(v[i + HV], mv), iv), top), bottom);
        L::storeNibbles(bytes + j * W, a, b);
      }
    }
  }
  constexpr uint32_t used = NV * W / 2 + 4 * NG;
  std::memset(out + used, 0, rowBytes(Storage::kInt4, NV * W, G) - used);
}

// One row held in registers (optionally rotated first) -> storage F.
using RegisterRowFn = void (*)(const float* x, const float* signs, float norm, uint8_t* out);

template <class S, Storage F, int NV, int VG>
void encodeRowRegisters(const float* x, const float* signs, float norm, uint8_t* out);

// The register kernel for this shape, or nullptr (then the looped code below is used).
// Shapes: head_dim 64 / 128 / 256 (at most 16 vectors) and groups of 2 to 16 vectors.
template <class S>
RegisterRowFn registerRowKernel(Storage f, uint32_t D, uint32_t G) {
  constexpr uint32_t W = S::W;
  if (f != Storage::kInt8 && f != Storage::kInt4) return nullptr;
  if (D % W != 0 || G % W != 0 || D % G != 0) return nullptr;
  const uint32_t nv = D / W, vg = G / W;
#define KVC_REG_CASE(NV_, VG_)                                                                        \
  if (nv == NV_ && vg == VG_)                                                                         \
    return f == Storage::kInt8 ? &encodeRowRegisters<S, Storage::kInt8, NV_, VG_>                     \
                               : &encodeRowRegisters<S, Storage::kInt4, NV_, VG_>;
  KVC_REG_CASE(4, 2) KVC_REG_CASE(4, 4)
  KVC_REG_CASE(8, 2) KVC_REG_CASE(8, 4) KVC_REG_CASE(8, 8)
  KVC_REG_CASE(16, 2) KVC_REG_CASE(16, 4) KVC_REG_CASE(16, 8) KVC_REG_CASE(16, 16)
#undef KVC_REG_CASE
  return nullptr;
}
#endif  // vector encoders

// One row of D floats into storage F. Widths that do not fit (W must divide G for int8,
// 2W for int4, W for the plain formats) use the scalar reference, as does width 1.
template <class S, Storage F>
void encodeRowFast(const float* x, uint32_t D, uint32_t G, uint8_t* out) {
  constexpr uint32_t W = S::W;
  if constexpr (W == 1) {
    encodeRowReference(F, x, D, G, out);
  } else if constexpr (F == Storage::kF32) {
    std::memcpy(out, x, 4ull * D);
  } else if constexpr (F == Storage::kF16 || F == Storage::kBF16) {
    if (D % W != 0) return encodeRowReference(F, x, D, G, out);
    uint16_t* o = reinterpret_cast<uint16_t*>(out);
    // Saturate at the format's range (clampToHalfRange / clampToBf16Range of the reference).
    const float limit = F == Storage::kF16 ? kHalfMax : kBf16Max;
    const typename S::V hi = S::set1(limit), lo = S::set1(-limit);
    for (uint32_t e = 0; e < D; e += W) {
      const typename S::V v = S::max(QuantLanes<S>::min(S::load(x + e), hi), lo);
      if constexpr (F == Storage::kF16) S::storeF16(o + e, v);
      else S::storeBf16(o + e, v);
    }
  } else {
#ifdef KVC_QUANT_VECTOR
    if (const RegisterRowFn fn = registerRowKernel<S>(F, D, G)) return fn(x, nullptr, 0.0f, out);
    if constexpr (F == Storage::kInt8) {
      if (G % W == 0 && D % G == 0) return quantizeInt8Vector<S>(x, D, G, out);
    } else {
      if (G % (2 * W) == 0 && D % G == 0) return quantizeInt4Vector<S>(x, D, G, out);
    }
#endif
    encodeRowReference(F, x, D, G, out);
  }
}
