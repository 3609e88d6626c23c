// precision 'fast': int8 / int4 keys scored with integer dot products against the query
// quantized to int8 per group, once per call (included into an ISA namespace after
// quantized_attention.inl; docs/fast-precision.md has the error model).
//
// Query m, group g, in two int8 terms: a = max |x|, t = x * (127 / a), xq = round_to_even(t)
// and xr = round_to_even((t - xq) * 254), both in [-127, 127], so x ~ (a / 127) * (xq + xr / 254)
// to within a / 64516 (all f32 arithmetic, the same on every ISA). With the step
// sx = (a / 127) / 254, key row r, group g, the stored integers k and the group's (scale, min)
// from gatherParams:
//   int8: logit = scale_attn * sum_g fl(P_g) * (s_rg * sx_g) + beta_r,
//         P_g = 254 * sum k * xq + sum k * xr
//   int4: the same with u in [0, 15] for k, plus min_rg * sum_g x (exact sum)
// P_g is an exact integer, so the only approximation is the query's rounding; the float
// terms are combined in the same order (one FMA per group) by every implementation, so the
// integer kernel (vpdpbusd) and the portable loop give bit-identical logits.

// The per-call int8 image of the M queries (scratch, see attentionScratchFloats).
struct FastQuery {
  int8_t* xq;     // [M][D]: first term
  int8_t* xr;     // [M][D]: the first term's rounding residual, in steps 254 times finer
  float* sx;      // [M][groups]: dequantization step of the group (of 254 * xq + xr)
  float* xsum;    // [M][groups]: sum of the exact query elements (int4 minimum term)
  int32_t* bias;  // [M][groups]: 128 * (254 * sum xq + sum xr) (int8 keys enter vpdpbusd as k + 128)
};

inline FastQuery fastQueryScratch(float* at, uint32_t M, uint32_t D, uint32_t groups) {
  FastQuery f;
  f.xq = reinterpret_cast<int8_t*>(at);
  f.xr = reinterpret_cast<int8_t*>(at + static_cast<uint64_t>(M) * (D / 4 + 1));
  float* after = at + 2ull * M * (D / 4 + 1);
  f.sx = after;
  f.xsum = after + static_cast<uint64_t>(M) * groups;
  f.bias = reinterpret_cast<int32_t*>(after + 2ull * M * groups);
  return f;
}

// Scalar on purpose: M x D elements per call, and the rounding must not depend on the ISA.
inline void quantizeQueries(const float* queries, uint32_t M, uint32_t D, uint32_t G, const FastQuery& f) {
  const uint32_t groups = D / G;
  for (uint32_t m = 0; m < M; ++m) {
    for (uint32_t g = 0; g < groups; ++g) {
      const float* x = queries + static_cast<uint64_t>(m) * D + g * G;
      int8_t* q = f.xq + static_cast<uint64_t>(m) * D + g * G;
      int8_t* qr = f.xr + static_cast<uint64_t>(m) * D + g * G;
      float a = 0.0f, sum = 0.0f;
      for (uint32_t e = 0; e < G; ++e) {
        a = maxOf(a, __builtin_fabsf(x[e]));
        sum += x[e];
      }
      const float inv = a > 0.0f ? 127.0f / a : 0.0f;
      int32_t qsum = 0, rsum = 0;
      for (uint32_t e = 0; e < G; ++e) {
        const float t = x[e] * inv;
        float r = __builtin_rintf(t);
        r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
        float rr = __builtin_rintf((t - r) * 254.0f);  // t - r is exact
        rr = rr > 127.0f ? 127.0f : (rr < -127.0f ? -127.0f : rr);
        q[e] = static_cast<int8_t>(r);
        qr[e] = static_cast<int8_t>(rr);
        qsum += q[e];
        rsum += qr[e];
      }
      f.sx[m * groups + g] = (a / 127.0f) / 254.0f;
      f.xsum[m * groups + g] = sum;
      f.bias[m * groups + g] = 128 * (254 * qsum + rsum);
    }
  }
}

// Integer dot product of group g of one stored key row with one int8 term of the query.
template <Storage KF>
inline int32_t groupDotScalar(const uint8_t* row, const int8_t* xq, uint32_t g, uint32_t G) {
  int32_t sum = 0;
  if constexpr (KF == Storage::kInt8) {
    const int8_t* k = reinterpret_cast<const int8_t*>(row) + g * G;
    for (uint32_t e = 0; e < G; ++e) sum += static_cast<int32_t>(k[e]) * xq[g * G + e];
  } else {
    // Byte b of the group: element b (low nibble) and element b + G/2 (high nibble).
    const uint8_t* bytes = row + g * (G / 2);
    for (uint32_t b = 0; b < G / 2; ++b) {
      sum += static_cast<int32_t>(bytes[b] & 0x0F) * xq[g * G + b] + static_cast<int32_t>(bytes[b] >> 4) * xq[g * G + G / 2 + b];
    }
  }
  return sum;
}

// The portable scorer: one row and one query at a time, the same float order as the vector one.
template <Storage KF>
void dotAllFastScalar(const AttentionParams& p, const FastQuery& fq, uint32_t M, const uint8_t* keys, const float* beta,
                      uint32_t rows, uint32_t LS, const float* kScales, const float* kMins, float* logits) {
  const uint32_t D = p.codec.headDim, G = p.codec.groupSize, groups = D / G;
  const uint32_t stride = p.pool.layout.keyRowBytes;
  for (uint32_t r = 0; r < rows; ++r) {
    const uint8_t* row = keys + static_cast<uint64_t>(r) * stride;
    const uint32_t tile = (r / kParamTile) * groups * kParamTile + r % kParamTile;
    for (uint32_t m = 0; m < M; ++m) {
      const int8_t* xq = fq.xq + static_cast<uint64_t>(m) * D;
      const int8_t* xr = fq.xr + static_cast<uint64_t>(m) * D;
      float acc = 0.0f;
      for (uint32_t g = 0; g < groups; ++g) {
        const int32_t dot = 254 * groupDotScalar<KF>(row, xq, g, G) + groupDotScalar<KF>(row, xr, g, G);
        acc = __builtin_fmaf(static_cast<float>(dot), kScales[tile + g * kParamTile] * fq.sx[m * groups + g], acc);
        if constexpr (KF == Storage::kInt4) acc = __builtin_fmaf(kMins[tile + g * kParamTile], fq.xsum[m * groups + g], acc);
      }
      logits[m * LS + r] = __builtin_fmaf(acc, p.scale, beta[r]);
    }
  }
}

#ifdef KVC_FAST_VNNI
inline int32_t loadDword(const int8_t* p) {
  int32_t x;
  __builtin_memcpy(&x, p, 4);
  return x;
}

// Logits of 16 rows (one parameter tile) for the MT queries m0..: rows in lanes. The rows'
// data bytes are transposed 64 bytes at a time so that lane i holds 4 bytes of row i, and
// each vpdpbusd adds 4 products for 16 rows against one broadcast dword of a query.
template <Storage KF, int MT, uint32_t DC, uint32_t GC>
void dotTileFastVnni(const AttentionParams& p, const FastQuery& fq, uint32_t m0, const uint8_t* rowsBase,
                     uint32_t rowStride, const float* beta, uint32_t r0, uint32_t n, uint32_t LS, const float* ks,
                     const float* kmin, float* logits) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  constexpr uint32_t kBytesPerGroup = KF == Storage::kInt8 ? GC : GC / 2;
  const uint32_t groups = D / GC;
  const uint32_t dataBytes = KF == Storage::kInt8 ? D : D / 2;
  __m512 L[MT];
  __m512i P[MT], R[MT];  // the two query terms' dot products of the current group
  for (int j = 0; j < MT; ++j) { L[j] = _mm512_setzero_ps(); P[j] = _mm512_setzero_si512(); R[j] = P[j]; }
  const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80808080u)), nib = _mm512_set1_epi32(0x0F0F0F0F);
  for (uint32_t c0 = 0; c0 < dataBytes; c0 += 64) {
    const uint32_t dwords = minU32(16, (dataBytes - c0) / 4);
    const __mmask16 k = static_cast<__mmask16>(dwords >= 16 ? 0xFFFF : (1u << dwords) - 1);
    __m512i v[16];
    for (int i = 0; i < 16; ++i) v[i] = _mm512_maskz_loadu_epi32(k, rowsBase + static_cast<uint64_t>(i) * rowStride + c0);
    transpose16(v);
#pragma GCC unroll 16
    for (uint32_t d = 0; d < dwords; ++d) {
      const uint32_t byte = c0 + 4 * d;  // first data byte of this dword
      const uint32_t g = byte / kBytesPerGroup, off = byte % kBytesPerGroup;
      if constexpr (KF == Storage::kInt8) {
        const __m512i a = _mm512_xor_si512(v[d], flip);  // k + 128 as unsigned bytes
        for (int j = 0; j < MT; ++j) {
          const uint64_t at = static_cast<uint64_t>(m0 + j) * D + byte;
          P[j] = _mm512_dpbusd_epi32(P[j], a, _mm512_set1_epi32(loadDword(fq.xq + at)));
          R[j] = _mm512_dpbusd_epi32(R[j], a, _mm512_set1_epi32(loadDword(fq.xr + at)));
        }
      } else {
        const __m512i lo = _mm512_and_si512(v[d], nib), hi = _mm512_and_si512(_mm512_srli_epi32(v[d], 4), nib);
        for (int j = 0; j < MT; ++j) {
          const uint64_t at = static_cast<uint64_t>(m0 + j) * D + g * GC + off;
          P[j] = _mm512_dpbusd_epi32(P[j], lo, _mm512_set1_epi32(loadDword(fq.xq + at)));
          P[j] = _mm512_dpbusd_epi32(P[j], hi, _mm512_set1_epi32(loadDword(fq.xq + at + GC / 2)));
          R[j] = _mm512_dpbusd_epi32(R[j], lo, _mm512_set1_epi32(loadDword(fq.xr + at)));
          R[j] = _mm512_dpbusd_epi32(R[j], hi, _mm512_set1_epi32(loadDword(fq.xr + at + GC / 2)));
        }
      }
      if (off + 4 == kBytesPerGroup) {  // the group is complete: fold it into the logits
        const __m512 s = _mm512_loadu_ps(ks + g * kParamTile);
        for (int j = 0; j < MT; ++j) {
          const uint32_t qg = (m0 + j) * groups + g;
          __m512i dot = _mm512_add_epi32(_mm512_mullo_epi32(P[j], _mm512_set1_epi32(254)), R[j]);
          if constexpr (KF == Storage::kInt8) dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(fq.bias[qg]));
          L[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(s, _mm512_set1_ps(fq.sx[qg])), L[j]);
          if constexpr (KF == Storage::kInt4) {
            L[j] = _mm512_fmadd_ps(_mm512_loadu_ps(kmin + g * kParamTile), _mm512_set1_ps(fq.xsum[qg]), L[j]);
          }
          P[j] = _mm512_setzero_si512();
          R[j] = P[j];
        }
      }
    }
  }
  const __mmask16 live = static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1);
  const __m512 b = _mm512_maskz_loadu_ps(live, beta + r0);
  for (int j = 0; j < MT; ++j) {
    _mm512_storeu_ps(logits + (m0 + j) * LS + r0, _mm512_fmadd_ps(L[j], _mm512_set1_ps(p.scale), b));
  }
}

template <Storage KF, uint32_t DC, uint32_t GC>
void dotAllFastVnniFixed(const AttentionParams& p, const FastQuery& fq, uint32_t M, const uint8_t* keys,
                         const float* beta, uint32_t rows, uint32_t LS, const float* kScales, const float* kMins,
                         float* logits, const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  const uint32_t groups = D / GC;
  const uint32_t stride = p.pool.layout.keyRowBytes;
  const uint32_t dataBytes = KF == Storage::kInt8 ? D : D / 2;
  alignas(64) uint8_t tail[16 * 1024];  // a partial tile's rows, zero-padded (head_dim <= 1024)
  for (uint32_t r0 = 0; r0 < rows; r0 += kParamTile) {
    const uint32_t n = minU32(kParamTile, rows - r0);
    prefetchRows(ahead, r0, n, stride);
    const uint8_t* base = keys + static_cast<uint64_t>(r0) * stride;
    uint32_t rowStride = stride;
    if (n < kParamTile) {  // rows past the block's end are not read
      __builtin_memset(tail, 0, 16ull * dataBytes);
      for (uint32_t i = 0; i < n; ++i) __builtin_memcpy(tail + i * dataBytes, base + static_cast<uint64_t>(i) * stride, dataBytes);
      base = tail;
      rowStride = dataBytes;
    }
    const uint32_t tile = (r0 / kParamTile) * groups * kParamTile;
    uint32_t m0 = 0;
    for (; m0 + 4 <= M; m0 += 4) {
      dotTileFastVnni<KF, 4, DC, GC>(p, fq, m0, base, rowStride, beta, r0, n, LS, kScales + tile, kMins + tile, logits);
    }
    if (m0 + 2 <= M) {
      dotTileFastVnni<KF, 2, DC, GC>(p, fq, m0, base, rowStride, beta, r0, n, LS, kScales + tile, kMins + tile, logits);
      m0 += 2;
    }
    if (m0 < M) dotTileFastVnni<KF, 1, DC, GC>(p, fq, m0, base, rowStride, beta, r0, n, LS, kScales + tile, kMins + tile, logits);
  }
}

template <Storage KF, uint32_t GC>
void dotAllFastVnniGroup(const AttentionParams& p, const FastQuery& fq, uint32_t M, const uint8_t* keys,
                         const float* beta, uint32_t rows, uint32_t LS, const float* kScales, const float* kMins,
                         float* logits, const uint8_t* ahead) {
  switch (p.codec.headDim) {
    case 128: return dotAllFastVnniFixed<KF, 128, GC>(p, fq, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    case 64: return dotAllFastVnniFixed<KF, 64, GC>(p, fq, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    default: return dotAllFastVnniFixed<KF, 0, GC>(p, fq, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
  }
}
#endif

// Logits [M][LS] of a block's quantized keys in precision 'fast'.
template <Storage KF>
void dotAllFast(const AttentionParams& p, const FastQuery& fq, uint32_t M, const uint8_t* keys, const float* beta,
                uint32_t rows, uint32_t LS, const float* kScales, const float* kMins, float* logits,
                const uint8_t* ahead) {
#ifdef KVC_FAST_VNNI
  switch (p.codec.groupSize) {
    case 32: return dotAllFastVnniGroup<KF, 32>(p, fq, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    case 64: return dotAllFastVnniGroup<KF, 64>(p, fq, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    case 128: return dotAllFastVnniGroup<KF, 128>(p, fq, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    default: break;
  }
#endif
  (void)ahead;
  dotAllFastScalar<KF>(p, fq, M, keys, beta, rows, LS, kScales, kMins, logits);
}
