// precision 'fast', int8 values with AVX-512 VNNI + VBMI (included after fast_keys.inl in
// kernels_avx512_vnni.cpp only). Per block, query and group the value weights w = p * scale
// (as in valueWeights) are quantized to unsigned bytes against their block maximum,
// wq = round_half_even(w * 255 / wmax), and acc += (wmax / 255) * sum_r wq_r * q8_r is
// accumulated exactly in int32 by vpdpbusd over four rows at a time (the rows' bytes
// interleaved by two byte permutes per 16 lanes), then converted once per block.
// Error: |Δw| <= wmax / 510 per row and group (docs/fast-precision.md).

// For 64-byte chunks of rows a, b: bytes (a[e], b[e]) for e in [0, 32) (lo) or [32, 64) (hi).
inline __m512i pairBytes(__m512i a, __m512i b, bool hi) {
  alignas(64) static const uint8_t kLo[64] = {
      0, 64, 1, 65, 2, 66, 3, 67, 4, 68, 5, 69, 6, 70, 7, 71, 8, 72, 9, 73, 10, 74, 11, 75, 12, 76, 13, 77, 14, 78, 15, 79,
      16, 80, 17, 81, 18, 82, 19, 83, 20, 84, 21, 85, 22, 86, 23, 87, 24, 88, 25, 89, 26, 90, 27, 91, 28, 92, 29, 93, 30, 94, 31, 95};
  const __m512i idx = _mm512_add_epi8(_mm512_load_si512(kLo), _mm512_set1_epi8(hi ? 32 : 0));
  return _mm512_permutex2var_epi8(a, idx, b);
}

// From pairs of rows (a, b) and (c, d) over elements [e0, e0 + 32): the 4 bytes
// (a[e], b[e], c[e], d[e]) of elements e0 + 16 k + i in lane i of quad k (k = 0, 1).
inline __m512i quadBytes(__m512i ab, __m512i cd, int k) {
  alignas(64) static const uint16_t kIdx[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i idx = _mm512_add_epi16(_mm512_load_si512(kIdx), _mm512_set1_epi16(static_cast<int16_t>(16 * k)));
  return _mm512_permutex2var_epi16(ab, idx, cd);
}

// Lane k of the result: the largest lane of v[k]. Sixteen maxima in 30 instructions (a
// transpose tree) instead of one horizontal reduction each.
[[gnu::always_inline]] inline __m512 reduceMax16(const __m512 (&v)[16]) {
  __m512 w[8], x[4];
  for (int i = 0; i < 8; ++i) w[i] = _mm512_max_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(w[2 * i]), b = _mm512_castps_pd(w[2 * i + 1]);
    x[i] = _mm512_max_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 z01 = _mm512_max_ps(_mm512_shuffle_f32x4(x[0], x[1], 0x88), _mm512_shuffle_f32x4(x[0], x[1], 0xDD));
  const __m512 z23 = _mm512_max_ps(_mm512_shuffle_f32x4(x[2], x[3], 0x88), _mm512_shuffle_f32x4(x[2], x[3], 0xDD));
  return _mm512_max_ps(_mm512_shuffle_f32x4(z01, z23, 0x88), _mm512_shuffle_f32x4(z01, z23, 0xDD));
}

// Weights of the MT queries m0.. over the block's rows as bytes: wq[(j * groups + g) * LS + r],
// and their steps ws[j * groups + g] = wmax / 255. Rows past `rows` get 0 (prob and scales are
// 0 there). The (query, group) pairs go 16 at a time, one per lane of their maxima and steps.
template <int MT>
void quantizeValueWeights(uint32_t m0, uint32_t rows, uint32_t LS, uint32_t groups, const float* prob,
                          const float* vScales, uint8_t* wq, float* ws) {
  const uint32_t tiles = paramTiles(rows);
  const uint32_t pairs = MT * groups;
  for (uint32_t k0 = 0; k0 < pairs; k0 += 16) {
    const uint32_t count = minU32(16, pairs - k0);
    const __mmask16 live = static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1);
    __m512 mx[16];
    for (uint32_t i = 0; i < 16; ++i) {
      mx[i] = _mm512_setzero_ps();
      if (i >= count) continue;
      const uint32_t j = (k0 + i) / groups, g = (k0 + i) % groups;
      const float* pj = prob + (m0 + j) * LS;
      for (uint32_t t = 0; t < tiles; ++t) {
        mx[i] = _mm512_max_ps(mx[i], _mm512_mul_ps(_mm512_loadu_ps(pj + t * kParamTile), _mm512_loadu_ps(vScales + (t * groups + g) * kParamTile)));
      }
    }
    const __m512 wmax = reduceMax16(mx);
    // 255 / wmax and wmax / 255 as the scalar divisions (IEEE, correctly rounded); 0 for wmax 0.
    alignas(64) float inv[16];
    _mm512_store_ps(inv, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(wmax, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(255.0f), wmax));
    _mm512_mask_storeu_ps(ws + k0, live, _mm512_div_ps(wmax, _mm512_set1_ps(255.0f)));
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t j = (k0 + i) / groups, g = (k0 + i) % groups;
      const float* pj = prob + (m0 + j) * LS;
      uint8_t* dst = wq + (k0 + i) * LS;
      for (uint32_t t = 0; t < tiles; ++t) {
        const __m512 w = _mm512_mul_ps(_mm512_loadu_ps(pj + t * kParamTile), _mm512_loadu_ps(vScales + (t * groups + g) * kParamTile));
        const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(w, _mm512_set1_ps(inv[i])));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + t * kParamTile), _mm512_cvtusepi32_epi8(_mm512_max_epi32(q, _mm512_setzero_si512())));
      }
    }
  }
}

// acc[m0 + j] += sum_r p_r * v_r for int8 value rows, D a multiple of 64, GC >= 16.
template <int MT, uint32_t DC, uint32_t GC>
void valueTileFastVnni(const AttentionParams& p, uint32_t m0, const uint8_t* values, uint32_t rows, uint32_t LS,
                       const float* prob, const float* vScales, uint8_t* wq, float* ws, float* acc,
                       const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  const uint32_t groups = D / GC;
  const uint32_t stride = p.pool.layout.valueRowBytes;
  quantizeValueWeights<MT>(m0, rows, LS, groups, prob, vScales, wq, ws);
  alignas(64) uint8_t tail[4 * 1024];  // the last 1-3 rows, zero-padded to four
  const uint32_t whole = rows & ~3u;
  if (whole < rows) {
    __builtin_memset(tail, 0, 4ull * D);
    for (uint32_t r = whole; r < rows; ++r) __builtin_memcpy(tail + (r - whole) * D, values + static_cast<uint64_t>(r) * stride, D);
  }
  for (uint32_t c0 = 0; c0 < D; c0 += 64) {
    __m512i ia[MT][4];
    for (int j = 0; j < MT; ++j) {
      for (int k = 0; k < 4; ++k) ia[j][k] = _mm512_setzero_si512();
    }
    for (uint32_t r = 0; r < rows; r += 4) {
      if (c0 == 0) prefetchRows(ahead, r, minU32(4, rows - r), stride);
      const uint8_t* base = r < whole ? values + static_cast<uint64_t>(r) * stride : tail;
      const uint32_t rs = r < whole ? stride : D;
      const __m512i a = _mm512_loadu_si512(base + c0), b = _mm512_loadu_si512(base + rs + c0);
      const __m512i c = _mm512_loadu_si512(base + 2 * rs + c0), d = _mm512_loadu_si512(base + 3 * rs + c0);
      __m512i x[4];
      for (int h = 0; h < 2; ++h) {
        const __m512i ab = pairBytes(a, b, h), cd = pairBytes(c, d, h);
        x[2 * h] = quadBytes(ab, cd, 0);
        x[2 * h + 1] = quadBytes(ab, cd, 1);
      }
      for (int j = 0; j < MT; ++j) {
        for (int k = 0; k < 4; ++k) {
          const uint32_t g = (c0 + 16 * k) / GC;
          const __m512i w = _mm512_set1_epi32(loadDword(reinterpret_cast<const int8_t*>(wq + (j * groups + g) * LS + r)));
          ia[j][k] = _mm512_dpbusd_epi32(ia[j][k], w, x[k]);
        }
      }
    }
    for (int j = 0; j < MT; ++j) {
      for (int k = 0; k < 4; ++k) {
        const uint32_t e = c0 + 16 * k;
        float* o = acc + (m0 + j) * D + e;
        _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[j][k]), _mm512_set1_ps(ws[j * groups + e / GC]), _mm512_loadu_ps(o)));
      }
    }
  }
}

template <uint32_t DC, uint32_t GC>
void valueAllFastVnniFixed(const AttentionParams& p, uint32_t M, const uint8_t* values, uint32_t rows, uint32_t LS,
                           const float* prob, const float* vScales, uint8_t* wq, float* ws, float* acc,
                           const uint8_t* ahead) {
  uint32_t m0 = 0;
  auto next = [&]() { const uint8_t* a = m0 == 0 ? ahead : nullptr; return a; };
  for (; m0 + 4 <= M; m0 += 4) valueTileFastVnni<4, DC, GC>(p, m0, values, rows, LS, prob, vScales, wq, ws, acc, next());
  if (m0 + 2 <= M) { valueTileFastVnni<2, DC, GC>(p, m0, values, rows, LS, prob, vScales, wq, ws, acc, next()); m0 += 2; }
  if (m0 < M) valueTileFastVnni<1, DC, GC>(p, m0, values, rows, LS, prob, vScales, wq, ws, acc, next());
}

// Whether the integer value path applies (else the exact fused path runs).
inline bool fastValues(const AttentionParams& p) {
  const uint32_t G = p.codec.groupSize;
  return p.codec.headDim % 64 == 0 && (G == 32 || G == 64 || G == 128);
}

template <uint32_t GC>
void valueAllFastVnniGroup(const AttentionParams& p, uint32_t M, const uint8_t* values, uint32_t rows, uint32_t LS,
                           const float* prob, const float* vScales, uint8_t* wq, float* ws, float* acc,
                           const uint8_t* ahead) {
  switch (p.codec.headDim) {
    case 128: return valueAllFastVnniFixed<128, GC>(p, M, values, rows, LS, prob, vScales, wq, ws, acc, ahead);
    case 64: return valueAllFastVnniFixed<64, GC>(p, M, values, rows, LS, prob, vScales, wq, ws, acc, ahead);
    default: return valueAllFastVnniFixed<0, GC>(p, M, values, rows, LS, prob, vScales, wq, ws, acc, ahead);
  }
}

inline void valueAllFastVnni(const AttentionParams& p, uint32_t M, const uint8_t* values, uint32_t rows, uint32_t LS,
                             const float* prob, const float* vScales, uint8_t* wq, float* ws, float* acc,
                             const uint8_t* ahead) {
  switch (p.codec.groupSize) {
    case 32: return valueAllFastVnniGroup<32>(p, M, values, rows, LS, prob, vScales, wq, ws, acc, ahead);
    case 64: return valueAllFastVnniGroup<64>(p, M, values, rows, LS, prob, vScales, wq, ws, acc, ahead);
    default: return valueAllFastVnniGroup<128>(p, M, values, rows, LS, prob, vScales, wq, ws, acc, ahead);
  }
}
