// Exact int8 key logits with 16 rows in the lanes (AVX-512 only; included into the ISA
// namespace by quantized_attention.inl). The rows' bytes are transposed 64 at a time so that
// lane i holds 4 bytes of row i; every element then feeds one FMA per query against the
// broadcast query element, with no horizontal sums, and the group scale multiplies each
// group's partial sum once per row and query instead of every element of the row.
//   logit_r = scale_attn * sum_g s_rg * (sum_{e in g} q8_re * x_e) + beta_r
// The same value as k = q8 * s dotted with x, rounded differently (within f32 error).

// 16 x 16 transpose of 32-bit lanes: out[k] lane i = in[i] lane k.
[[gnu::always_inline]] inline void transpose16(__m512i (&v)[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // u[4i + s], 128-bit lane L: dword 4L + s of rows 4i..4i+3.
  for (int s = 0; s < 4; ++s) {
    const __m512i w0 = _mm512_shuffle_i32x4(u[s], u[4 + s], 0x44), w1 = _mm512_shuffle_i32x4(u[s], u[4 + s], 0xEE);
    const __m512i w2 = _mm512_shuffle_i32x4(u[8 + s], u[12 + s], 0x44), w3 = _mm512_shuffle_i32x4(u[8 + s], u[12 + s], 0xEE);
    v[s] = _mm512_shuffle_i32x4(w0, w2, 0x88);
    v[4 + s] = _mm512_shuffle_i32x4(w0, w2, 0xDD);
    v[8 + s] = _mm512_shuffle_i32x4(w1, w3, 0x88);
    v[12 + s] = _mm512_shuffle_i32x4(w1, w3, 0xDD);
  }
}

// Byte B of every dword moved to the dword's top byte, the rest zero: the signed byte times
// 2^24 as an int32. One instruction per byte (a shift, a byte shuffle or a mask) instead of a
// shift up and an arithmetic shift back; the 2^24 leaves with the final scale (exact, see
// dotTileInt8T).
template <int B>
[[gnu::always_inline]] inline __m512i byteOnTop(__m512i v) {
  if constexpr (B == 0) {
    return _mm512_slli_epi32(v, 24);
  } else if constexpr (B == 3) {
    return _mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFF000000u)));
  } else {
    // vpshufb within each 128-bit lane: byte 4i + 3 takes byte 4i + B, the others are zeroed.
    constexpr int kZero = 0x808080;
    return _mm512_shuffle_epi8(v, _mm512_broadcast_i32x4(_mm_setr_epi32(kZero | B << 24, kZero | (4 + B) << 24,
                                                                        kZero | (8 + B) << 24, kZero | (12 + B) << 24)));
  }
}

// Byte B of every dword, sign-extended, times 2^24, as floats (exact).
template <int B>
[[gnu::always_inline]] inline __m512 signedByteHigh(__m512i v) {
  return _mm512_cvtepi32_ps(byteOnTop<B>(v));
}

// Logits of the MT queries m0.. for n <= 16 rows at `rows` (stride bytes apart), whose group
// scales are the tile ks (ks[g * kParamTile + i]: row i, group g). D: a multiple of 64.
template <int MT, uint32_t DC, uint32_t GC>
void dotTileInt8T(const AttentionParams& p, const float* queries, uint32_t m0, const uint8_t* rows, uint32_t stride,
                  uint32_t n, const float* beta, const float* ks, float* logits, uint32_t LS) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  const float* q = queries + static_cast<uint64_t>(m0) * D;
  __m512 L[MT];
  for (int j = 0; j < MT; ++j) L[j] = _mm512_setzero_ps();
  // Two partial sums per query and group (even and odd dwords): eight FMA chains for four
  // queries cover the FMA latency.
  __m512 P[MT][2];
  for (uint32_t c0 = 0; c0 < D; c0 += 64) {
    __m512i v[16];
    for (uint32_t i = 0; i < 16; ++i) {
      v[i] = i < n ? _mm512_loadu_si512(rows + static_cast<uint64_t>(i) * stride + c0) : _mm512_setzero_si512();
    }
    transpose16(v);
#pragma GCC unroll 16
    for (uint32_t d = 0; d < 16; ++d) {
      const uint32_t e = c0 + 4 * d;
      const int h = d & 1;
      const __m512 k0 = signedByteHigh<0>(v[d]), k1 = signedByteHigh<1>(v[d]), k2 = signedByteHigh<2>(v[d]),
                   k3 = signedByteHigh<3>(v[d]);
      const bool first = e % GC < 8;  // the group's first two dwords start its two sums
      for (int j = 0; j < MT; ++j) {
        const float* x = q + static_cast<uint64_t>(j) * D + e;
        __m512 s = first ? _mm512_mul_ps(k0, _mm512_set1_ps(x[0])) : _mm512_fmadd_ps(k0, _mm512_set1_ps(x[0]), P[j][h]);
        s = _mm512_fmadd_ps(k1, _mm512_set1_ps(x[1]), s);
        s = _mm512_fmadd_ps(k2, _mm512_set1_ps(x[2]), s);
        P[j][h] = _mm512_fmadd_ps(k3, _mm512_set1_ps(x[3]), s);
      }
      if ((e + 4) % GC == 0) {  // the group is complete
        const __m512 scale = _mm512_loadu_ps(ks + (e / GC) * kParamTile);
        for (int j = 0; j < MT; ++j) L[j] = _mm512_fmadd_ps(_mm512_add_ps(P[j][0], P[j][1]), scale, L[j]);
      }
    }
  }
  // Every key element entered times 2^24 (signedByteHigh), so P and L are 2^24 times the
  // unscaled sums, exactly (scaling all operands of an FMA by a power of two scales its
  // rounded result by the same); 2^-24 times the attention scale, also exact, undoes it.
  const __mmask16 live = static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1);
  const __m512 b = _mm512_maskz_loadu_ps(live, beta);
  const __m512 scale = _mm512_set1_ps(p.scale * 0x1p-24f);
  for (int j = 0; j < MT; ++j) _mm512_mask_storeu_ps(logits + (m0 + j) * LS, live, _mm512_fmadd_ps(L[j], scale, b));
}

template <uint32_t DC, uint32_t GC>
void dotAllInt8T(const AttentionParams& p, const float* queries, uint32_t M, const uint8_t* keys, const float* beta,
                 uint32_t rows, uint32_t LS, const float* kScales, float* logits, const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  const uint32_t groups = D / GC;
  const uint32_t stride = p.pool.layout.keyRowBytes;
  for (uint32_t r0 = 0; r0 < rows; r0 += kParamTile) {
    const uint32_t n = minU32(kParamTile, rows - r0);
    prefetchRows(ahead, r0, n, stride);
    const uint8_t* base = keys + static_cast<uint64_t>(r0) * stride;
    const float* ks = kScales + (r0 / kParamTile) * groups * kParamTile;
    uint32_t m0 = 0;
    for (; m0 + 4 <= M; m0 += 4) dotTileInt8T<4, DC, GC>(p, queries, m0, base, stride, n, beta + r0, ks, logits + r0, LS);
    if (m0 + 2 <= M) {
      dotTileInt8T<2, DC, GC>(p, queries, m0, base, stride, n, beta + r0, ks, logits + r0, LS);
      m0 += 2;
    }
    if (m0 < M) dotTileInt8T<1, DC, GC>(p, queries, m0, base, stride, n, beta + r0, ks, logits + r0, LS);
  }
}

// int4 keys, the same way: k = u * s + m per group, so
//   logit_r = scale_attn * sum_g (s_rg * sum_{e in g} u_re * x_e + m_rg * sum_{e in g} x_e) + beta_r
// with the query's group sums computed once per range. Byte b of a group
// holds element b (low nibble) and element b + G/2 (high nibble).

// The low and high nibbles of the 4 bytes of every dword, each moved to the top of a dword:
// lo[k] = (nibble 2k) * 2^24, hi[k] = (nibble 2k + 1) * 2^28, as floats (exact; the high ones
// exceed 2^31 as integers, hence the unsigned conversion). Two masks shared by the 8 nibbles,
// then one byte shuffle or mask each, instead of a shift and a mask per nibble; the powers of
// two leave with the final scale (see dotTileInt4T).
[[gnu::always_inline]] inline void nibblesOnTop(__m512i v, __m512 (&lo)[4], __m512 (&hi)[4]) {
  const __m512i vl = _mm512_and_si512(v, _mm512_set1_epi32(0x0F0F0F0F));
  const __m512i vh = _mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xF0F0F0F0u)));
  lo[0] = _mm512_cvtepi32_ps(byteOnTop<0>(vl));
  lo[1] = _mm512_cvtepi32_ps(byteOnTop<1>(vl));
  lo[2] = _mm512_cvtepi32_ps(byteOnTop<2>(vl));
  lo[3] = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(0x0F000000)));
  hi[0] = _mm512_cvtepu32_ps(byteOnTop<0>(vh));
  hi[1] = _mm512_cvtepu32_ps(byteOnTop<1>(vh));
  hi[2] = _mm512_cvtepu32_ps(byteOnTop<2>(vh));
  hi[3] = _mm512_cvtepu32_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xF0000000u))));
}

// The largest group count of the transposed int4 path (head_dim / group size).
constexpr uint32_t kMaxTransposedGroups = 32;

// Logits of the MT queries m0.. for n <= 16 rows (see dotTileInt8T); ks / kmin: the tiles of
// scales and minimums; xsum[j * kMaxTransposedGroups + g]: query j's sum over group g. D: a
// multiple of 128.
template <int MT, uint32_t DC, uint32_t GC>
void dotTileInt4T(const AttentionParams& p, const float* queries, uint32_t m0, const uint8_t* rows, uint32_t stride,
                  uint32_t n, const float* beta, const float* ks, const float* kmin, const float* xsum, float* logits,
                  uint32_t LS) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  constexpr uint32_t kHalf = GC / 2;  // bytes per group
  const float* q = queries + static_cast<uint64_t>(m0) * D;
  __m512 L[MT];
  for (int j = 0; j < MT; ++j) L[j] = _mm512_setzero_ps();
  __m512 P[MT][2];  // low and high nibbles of the current group: eight FMA chains
  for (uint32_t c0 = 0; c0 < D / 2; c0 += 64) {
    __m512i v[16];
    for (uint32_t i = 0; i < 16; ++i) {
      v[i] = i < n ? _mm512_loadu_si512(rows + static_cast<uint64_t>(i) * stride + c0) : _mm512_setzero_si512();
    }
    transpose16(v);
#pragma GCC unroll 16
    for (uint32_t d = 0; d < 16; ++d) {
      const uint32_t byte = c0 + 4 * d, g = byte / kHalf, off = byte % kHalf;
      const uint32_t e = g * GC + off;  // element of the first low nibble
      __m512 lo[4], hi[4];
      nibblesOnTop(v[d], lo, hi);
      for (int j = 0; j < MT; ++j) {
        const float* x = q + static_cast<uint64_t>(j) * D + e;
        __m512 a = off == 0 ? _mm512_mul_ps(lo[0], _mm512_set1_ps(x[0])) : _mm512_fmadd_ps(lo[0], _mm512_set1_ps(x[0]), P[j][0]);
        __m512 b = off == 0 ? _mm512_mul_ps(hi[0], _mm512_set1_ps(x[kHalf])) : _mm512_fmadd_ps(hi[0], _mm512_set1_ps(x[kHalf]), P[j][1]);
        for (int k = 1; k < 4; ++k) {
          a = _mm512_fmadd_ps(lo[k], _mm512_set1_ps(x[k]), a);
          b = _mm512_fmadd_ps(hi[k], _mm512_set1_ps(x[kHalf + k]), b);
        }
        P[j][0] = a;
        P[j][1] = b;
      }
      if (off + 4 == kHalf) {  // the group is complete
        const __m512 scale = _mm512_loadu_ps(ks + g * kParamTile), mn = _mm512_loadu_ps(kmin + g * kParamTile);
        for (int j = 0; j < MT; ++j) {
          // P[j][0] is 2^24 and P[j][1] 2^28 times its sum: 2^24 times their rounded sum.
          L[j] = _mm512_fmadd_ps(_mm512_fmadd_ps(P[j][1], _mm512_set1_ps(0x1p-4f), P[j][0]), scale, L[j]);
          L[j] = _mm512_fmadd_ps(mn, _mm512_set1_ps(xsum[j * kMaxTransposedGroups + g]), L[j]);
        }
      }
    }
  }
  // L is 2^24 times the unscaled logit, exactly (the query sums carry the 2^24 too).
  const __mmask16 live = static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1);
  const __m512 b = _mm512_maskz_loadu_ps(live, beta);
  const __m512 scale = _mm512_set1_ps(p.scale * 0x1p-24f);
  for (int j = 0; j < MT; ++j) _mm512_mask_storeu_ps(logits + (m0 + j) * LS, live, _mm512_fmadd_ps(L[j], scale, b));
}

// The group sums of the M queries times 2^24 (the scaling of dotTileInt4T's sums, exact),
// xsum[m * kMaxTransposedGroups + g], once per range rather than once per block (they are the
// same for every block). D / G <= kMaxTransposedGroups.
inline void int4QuerySums(const float* queries, uint32_t M, uint32_t D, uint32_t G, float* xsum) {
  for (uint32_t m = 0; m < M; ++m) {
    for (uint32_t g = 0; g < D / G; ++g) {
      const float* x = queries + static_cast<uint64_t>(m) * D + g * G;
      __m512 s = _mm512_loadu_ps(x);
      for (uint32_t e = 16; e < G; e += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(x + e));
      xsum[m * kMaxTransposedGroups + g] = _mm512_reduce_add_ps(s) * 0x1p24f;
    }
  }
}

// The M queries' group sums (int4QuerySums) follow the queries in scratch.
inline const float* int4QuerySumsOf(const float* queries, uint32_t M, uint32_t D) {
  return queries + static_cast<uint64_t>(M) * D;
}

template <int MT, uint32_t DC, uint32_t GC>
void dotQueriesInt4T(const AttentionParams& p, const float* queries, uint32_t m0, const uint8_t* keys,
                     const float* beta, uint32_t rows, uint32_t LS, const float* kScales, const float* kMins,
                     const float* xsum, float* logits, const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  const uint32_t groups = D / GC;
  const uint32_t stride = p.pool.layout.keyRowBytes;
  for (uint32_t r0 = 0; r0 < rows; r0 += kParamTile) {
    const uint32_t n = minU32(kParamTile, rows - r0);
    prefetchRows(ahead, r0, n, stride);
    const uint32_t tile = (r0 / kParamTile) * groups * kParamTile;
    dotTileInt4T<MT, DC, GC>(p, queries, m0, keys + static_cast<uint64_t>(r0) * stride, stride, n, beta + r0,
                             kScales + tile, kMins + tile, xsum, logits + r0, LS);
  }
}

template <uint32_t DC, uint32_t GC>
void dotAllInt4T(const AttentionParams& p, const float* queries, uint32_t M, const uint8_t* keys, const float* beta,
                 uint32_t rows, uint32_t LS, const float* kScales, const float* kMins, float* logits,
                 const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  const float* sums = int4QuerySumsOf(queries, M, D);
  uint32_t m0 = 0;
  // Only the first tile of queries prefetches the block ahead.
  auto next = [&]() { const uint8_t* a = m0 == 0 ? ahead : nullptr; return a; };
  auto xs = [&]() { return sums + m0 * kMaxTransposedGroups; };
  for (; m0 + 4 <= M; m0 += 4) dotQueriesInt4T<4, DC, GC>(p, queries, m0, keys, beta, rows, LS, kScales, kMins, xs(), logits, next());
  if (m0 + 2 <= M) {
    dotQueriesInt4T<2, DC, GC>(p, queries, m0, keys, beta, rows, LS, kScales, kMins, xs(), logits, next());
    m0 += 2;
  }
  if (m0 < M) dotQueriesInt4T<1, DC, GC>(p, queries, m0, keys, beta, rows, LS, kScales, kMins, xs(), logits, next());
}
