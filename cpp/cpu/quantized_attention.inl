// Decode attention over int8 / int4 rows with the dequantization fused into the dot and
// value loops (included into an ISA namespace after row_decode.inl, before
// attention_kernel.inl). The per-group parameters of a block are converted once, as tiles of
// kParamTile rows: params[(t * groups + g) * kParamTile + i] belongs to row t * kParamTile + i,
// so a row reaches each of its groups at a constant offset from one pointer.
//
// Keys: k = q8 * scale (int8) or q4 * scale + min (int4), exactly as the row decoder, shared
// by the queries of a tile. Values: the scale moves to the probability, w = p * scale per
// (query, row, group), so a value element costs one convert and one FMA per query; the int4
// minimum contributes sum_r p_r * min_{r,g} to the group's lanes, added once per block.

constexpr uint32_t kParamTile = kScratchRowAlign;

// Group sizes with compile-time kernels; other group sizes decode blocks into f32 rows first.
constexpr bool fusedGroupSize(uint32_t g) { return g == 32 || g == 64 || g == 128; }

inline uint32_t paramTiles(uint32_t rows) { return (rows + kParamTile - 1) / kParamTile; }

// The f16 (scale, min) pairs (int4) or scales (int8) of rows [0, rows) of a block as f32
// tiles; rows past `rows` get 0 so that weights and minimum sums over whole tiles add nothing.
template <class S, class = void>
struct HasHalfFields16 : std::false_type {};
template <class S>
struct HasHalfFields16<S, std::void_t<decltype(S::kHalfFields16)>> : std::true_type {};

// With 16-lane vectors (S::halfFields16): each tile from one masked load per row and two word
// permutes per four f16 fields, instead of a gather per field pair (the gathers took 13% of
// cold int4 decode).
template <class S, Storage F>
void transposeParams(const uint8_t* rowsBase, uint32_t rows, uint32_t stride, uint32_t D, uint32_t G, float* scales,
                     float* mins) {
  const uint32_t groups = D / G;
  const uint32_t tiles = paramTiles(rows);
  // f16 fields per row after the data bytes: a scale per group (int8) or a (scale, min) pair.
  const uint32_t fields = F == Storage::kInt4 ? 2 * groups : groups;
  const uint32_t dataBytes = F == Storage::kInt4 ? D / 2 : D;
  for (uint32_t t = 0; t < tiles; ++t) {
    const uint32_t r = t * kParamTile;
    const uint32_t count = minU32(kParamTile, rows - r);
    const uint8_t* first = rowsBase + static_cast<uint64_t>(r) * stride + dataBytes;
    for (uint32_t f0 = 0; f0 < fields; f0 += 4) {
      const uint32_t n = minU32(4, fields - f0);
      typename S::V v[4];
      S::halfFields16(first + 2 * f0, stride, count, n, v);
      for (uint32_t k = 0; k < n; ++k) {
        const uint32_t f = f0 + k;
        if constexpr (F == Storage::kInt4) {
          S::store((f % 2 ? mins : scales) + (t * groups + f / 2) * kParamTile, v[k]);
        } else {
          S::store(scales + (t * groups + f) * kParamTile, v[k]);
        }
      }
    }
  }
}

template <class S, Storage F>
void gatherParams(const uint8_t* rowsBase, uint32_t rows, uint32_t stride, uint32_t D, uint32_t G, float* scales,
                  float* mins) {
  if constexpr (HasHalfFields16<S>::value && S::W == kParamTile) {
    return transposeParams<S, F>(rowsBase, rows, stride, D, G, scales, mins);
  }
  const uint32_t groups = D / G;
  const uint32_t tiles = paramTiles(rows);
  for (uint32_t t = 0; t < tiles; ++t) {
    for (uint32_t i = 0; i < kParamTile; i += S::W) {
      const uint32_t r = t * kParamTile + i;
      const uint32_t count = r < rows ? minU32(S::W, rows - r) : 0;
      const uint8_t* row = rowsBase + static_cast<uint64_t>(r) * stride;
      if constexpr (F == Storage::kInt4) {
        for (uint32_t g = 0; g < groups; ++g) {
          typename S::V sc, mn;
          S::gatherHalfPair(row + D / 2 + 4 * g, stride, count, sc, mn);
          S::store(scales + (t * groups + g) * kParamTile + i, sc);
          S::store(mins + (t * groups + g) * kParamTile + i, mn);
        }
      } else {
        // Two scales per 4-byte gather; with an odd group count the last gather reads the
        // row's 2 bytes of padding (rows are padded to 4 bytes).
        for (uint32_t g = 0; g < groups; g += 2) {
          typename S::V a, b;
          S::gatherHalfPair(row + D + 2 * g, stride, count, a, b);
          S::store(scales + (t * groups + g) * kParamTile + i, a);
          if (g + 1 < groups) S::store(scales + (t * groups + g + 1) * kParamTile + i, b);
        }
      }
    }
  }
}

#ifdef KVC_SIMD_AVX512
#include "transposed_keys.inl"
#endif

// Dot products of R key rows starting at `row` (stride bytes apart) with the MT queries,
// into acc[i][j]; sc / mn point at the rows' first group parameters (tile layout).
// Inlined with a constant `groups` when the head dimension is known at compile time.
// Query j is at q + j * qStride.
template <class S, Storage KF, int MT, int R, uint32_t GC>
[[gnu::always_inline]] inline void dotRowsQ(const float* q, uint32_t qStride, const uint8_t* row, uint32_t stride,
                                            const float* sc, const float* mn, uint32_t groups,
                                            typename S::V (&acc)[R][MT]) {
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < MT; ++j) acc[i][j] = S::zero();
  }
  for (uint32_t g = 0; g < groups; ++g) {
    typename S::V scale[R];
    for (int i = 0; i < R; ++i) scale[i] = S::set1(sc[g * kParamTile + i]);
    if constexpr (KF == Storage::kInt8) {
      for (uint32_t e = g * GC; e < (g + 1) * GC; e += S::W) {
        typename S::V k[R];
        for (int i = 0; i < R; ++i) k[i] = S::mul(S::loadI8(reinterpret_cast<const int8_t*>(row + i * stride) + e), scale[i]);
        for (int j = 0; j < MT; ++j) {
          const typename S::V qv = S::load(q + j * qStride + e);
          for (int i = 0; i < R; ++i) acc[i][j] = S::fma(k[i], qv, acc[i][j]);
        }
      }
    } else {
      typename S::V mins[R];
      for (int i = 0; i < R; ++i) mins[i] = S::set1(mn[g * kParamTile + i]);
      // Byte b of the group holds elements b (low nibble) and b + GC / 2 (high nibble).
      for (uint32_t b = 0; b < GC / 2; b += S::W) {
        typename S::V lo[R], hi[R];
        for (int i = 0; i < R; ++i) {
          S::loadU4Pair(row + i * stride + g * (GC / 2) + b, lo[i], hi[i]);
          lo[i] = S::fma(lo[i], scale[i], mins[i]);
          hi[i] = S::fma(hi[i], scale[i], mins[i]);
        }
        const uint32_t e = g * GC + b;
        for (int j = 0; j < MT; ++j) {
          const typename S::V qlo = S::load(q + j * qStride + e);
          for (int i = 0; i < R; ++i) acc[i][j] = S::fma(lo[i], qlo, acc[i][j]);
          const typename S::V qhi = S::load(q + j * qStride + e + GC / 2);
          for (int i = 0; i < R; ++i) acc[i][j] = S::fma(hi[i], qhi, acc[i][j]);
        }
      }
    }
  }
}

// logits of the MT queries of one tile over quantized key rows (see dotTile); queries:
// the M query vectors, contiguous ([M][D], so that one register addresses them all);
// kScales / kMins from gatherParams.
template <class S, Storage KF, int MT, uint32_t DC, uint32_t GC>
void dotTileQ(const AttentionParams& p, const float* queries, uint32_t m0, const uint8_t* keys, const float* beta,
              uint32_t rows, uint32_t LS, const float* kScales, const float* kMins, float* logits, const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  const uint32_t groups = D / GC;
  const uint32_t stride = p.pool.layout.keyRowBytes;
  const float scale = p.scale;
  const float* q = queries + m0 * D;
  // Four rows per pass for four queries: 16 independent accumulators keep both FMA pipes
  // busy, each query chunk feeds four FMAs, and the 16 dot products reduce together.
  constexpr int kRows = MT <= 4 ? 4 : 2;
  uint32_t r = 0;
  for (; r + kRows <= rows; r += kRows) {
    prefetchRows(ahead, r, kRows, stride);
    const uint8_t* row = keys + static_cast<uint64_t>(r) * stride;
    // r is a multiple of kRows, which divides kParamTile: the rows share a parameter tile.
    const uint32_t tileOffset = (r / kParamTile) * groups * kParamTile + r % kParamTile;
    typename S::V acc[kRows][MT];
    dotRowsQ<S, KF, MT, kRows, GC>(q, D, row, stride, kScales + tileOffset, kMins + tileOffset, groups, acc);
    if constexpr (MT == 4 && kRows == 4) {
      S::storeDots4x4(acc, scale, beta + r, logits + m0 * LS + r, LS);
    } else {
      for (int i = 0; i < kRows; ++i) storeLogits<S, MT>(acc[i], m0, r + i, LS, scale, beta, logits);
    }
  }
  for (; r < rows; ++r) {
    prefetchRow(ahead, r, stride);
    const uint32_t tileOffset = (r / kParamTile) * groups * kParamTile + r % kParamTile;
    typename S::V acc[1][MT];
    dotRowsQ<S, KF, MT, 1, GC>(q, D, keys + static_cast<uint64_t>(r) * stride, stride, kScales + tileOffset,
                               kMins + tileOffset, groups, acc);
    storeLogits<S, MT>(acc[0], m0, r, LS, scale, beta, logits);
  }
}

template <class S, Storage KF, uint32_t DC, uint32_t GC>
void dotAllQFixed(const AttentionParams& p, const float* queries, uint32_t M, const uint8_t* keys, const float* beta,
                  uint32_t rows, uint32_t LS, const float* kScales, const float* kMins, float* logits,
                  const uint8_t* ahead) {
  uint32_t m0 = 0;
  // Only the first tile prefetches: the later ones find the block ahead's rows requested.
  auto next = [&]() { const uint8_t* a = m0 == 0 ? ahead : nullptr; return a; };
  for (; m0 + 8 <= M; m0 += 8) dotTileQ<S, KF, 8, DC, GC>(p, queries, m0, keys, beta, rows, LS, kScales, kMins, logits, next());
  if (m0 + 4 <= M) { dotTileQ<S, KF, 4, DC, GC>(p, queries, m0, keys, beta, rows, LS, kScales, kMins, logits, next()); m0 += 4; }
  if (m0 + 2 <= M) { dotTileQ<S, KF, 2, DC, GC>(p, queries, m0, keys, beta, rows, LS, kScales, kMins, logits, next()); m0 += 2; }
  if (m0 < M) dotTileQ<S, KF, 1, DC, GC>(p, queries, m0, keys, beta, rows, LS, kScales, kMins, logits, next());
}

template <class S, Storage KF, uint32_t GC>
void dotAllQGroup(const AttentionParams& p, const float* queries, uint32_t M, const uint8_t* keys, const float* beta,
                  uint32_t rows, uint32_t LS, const float* kScales, const float* kMins, float* logits,
                  const uint8_t* ahead) {
#ifdef KVC_SIMD_AVX512
  // int8 / int4 keys with rows in the lanes (transposed_keys.inl) where whole 64-byte chunks fit.
  if constexpr (KF == Storage::kInt8 && S::W == 16) {
    switch (p.codec.headDim) {
      case 128: return dotAllInt8T<128, GC>(p, queries, M, keys, beta, rows, LS, kScales, logits, ahead);
      case 64: return dotAllInt8T<64, GC>(p, queries, M, keys, beta, rows, LS, kScales, logits, ahead);
      default:
        if (p.codec.headDim % 64 == 0) return dotAllInt8T<0, GC>(p, queries, M, keys, beta, rows, LS, kScales, logits, ahead);
    }
  }
  if constexpr (KF == Storage::kInt4 && S::W == 16) {
    if (p.codec.headDim / GC <= kMaxTransposedGroups) {
      switch (p.codec.headDim) {
        case 128: return dotAllInt4T<128, GC>(p, queries, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
        default:
          if (p.codec.headDim % 128 == 0) return dotAllInt4T<0, GC>(p, queries, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
      }
    }
  }
#endif
  switch (p.codec.headDim) {
    case 128: return dotAllQFixed<S, KF, 128, GC>(p, queries, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    case 64: return dotAllQFixed<S, KF, 64, GC>(p, queries, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    default: return dotAllQFixed<S, KF, 0, GC>(p, queries, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
  }
}

template <class S, Storage KF>
void dotAllQ(const AttentionParams& p, const float* queries, uint32_t M, const uint8_t* keys, const float* beta,
             uint32_t rows, uint32_t LS, const float* kScales, const float* kMins, float* logits, const uint8_t* ahead) {
  switch (p.codec.groupSize) {
    case 32: return dotAllQGroup<S, KF, 32>(p, queries, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    case 64: return dotAllQGroup<S, KF, 64>(p, queries, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
    default: return dotAllQGroup<S, KF, 128>(p, queries, M, keys, beta, rows, LS, kScales, kMins, logits, ahead);
  }
}

#ifdef KVC_SIMD_AVX512
// Lane k of the result: the sum of the lanes of v[k], added in the order of
// _mm512_reduce_add_ps (halves of 256, then 128, then lanes i and i + 2, then i and i + 1),
// so each sum is bit-identical to S::reduce; sixteen sums by a transpose tree (45 instructions)
// instead of sixteen horizontal reductions.
[[gnu::always_inline]] inline __m512 reduceAdd16(const __m512 (&v)[16]) {
  // The tree leaves v[4L + k]'s sum in lane 4k + L of its input order: feed it transposed.
  __m512 t[8], x[4], s[2];
  for (int i = 0; i < 8; ++i) {
    const __m512 a = v[((2 * i) % 4) * 4 + (2 * i) / 4], b = v[((2 * i + 1) % 4) * 4 + (2 * i + 1) / 4];
    t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  }
  for (int i = 0; i < 4; ++i) {
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88), _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xDD));
  }
  for (int i = 0; i < 2; ++i) {
    const __m512d y = _mm512_castps_pd(x[2 * i]), z = _mm512_castps_pd(x[2 * i + 1]);
    s[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(y, z)), _mm512_castpd_ps(_mm512_unpackhi_pd(y, z)));
  }
  return _mm512_add_ps(_mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(3, 1, 3, 1)));
}
#endif

// Value weights of the MT queries m0.. of a tile: w[(t * MT + j) * groups + g][i] =
// p[m0 + j][t * kParamTile + i] * scale of that row and group; and, for int4, the minimum
// terms minSum[j * groups + g] = sum_r p[m0 + j][r] * min_{r,g}. Whole tiles: the
// probabilities and parameters past the block's rows are 0.
template <class S, Storage VF, int MT>
void valueWeights(uint32_t m0, uint32_t rows, uint32_t LS, uint32_t groups, const float* prob, const float* vScales,
                  const float* vMins, float* w, float* minSum) {
  const uint32_t tiles = paramTiles(rows);
  for (uint32_t t = 0; t < tiles; ++t) {
    for (int j = 0; j < MT; ++j) {
      const float* pj = prob + (m0 + j) * LS + t * kParamTile;
      for (uint32_t g = 0; g < groups; ++g) {
        const float* sc = vScales + (t * groups + g) * kParamTile;
        float* dst = w + ((t * MT + j) * groups + g) * kParamTile;
        for (uint32_t i = 0; i < kParamTile; i += S::W) S::store(dst + i, S::mul(S::load(pj + i), S::load(sc + i)));
      }
    }
  }
  if constexpr (VF == Storage::kInt4) {
#ifdef KVC_SIMD_AVX512
    if constexpr (S::W == 16) {
      // The (query, group) pairs 16 at a time, their sums reduced together (reduceAdd16).
      const uint32_t pairs = MT * groups;
      for (uint32_t k0 = 0; k0 < pairs; k0 += 16) {
        const uint32_t count = minU32(16, pairs - k0);
        __m512 sum[16];
        for (uint32_t k = 0; k < 16; ++k) {
          sum[k] = _mm512_setzero_ps();
          if (k >= count) continue;
          const uint32_t j = (k0 + k) / groups, g = (k0 + k) % groups;
          for (uint32_t t = 0; t < tiles; ++t) {
            const float* pj = prob + (m0 + j) * LS + t * kParamTile;
            const float* mn = vMins + (t * groups + g) * kParamTile;
            for (uint32_t i = 0; i < kParamTile; i += S::W) sum[k] = S::fma(S::load(pj + i), S::load(mn + i), sum[k]);
          }
        }
        _mm512_mask_storeu_ps(minSum + k0, static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1),
                              reduceAdd16(sum));
      }
      return;
    }
#endif
    for (int j = 0; j < MT; ++j) {
      for (uint32_t g = 0; g < groups; ++g) {
        typename S::V sum = S::zero();
        for (uint32_t t = 0; t < tiles; ++t) {
          const float* pj = prob + (m0 + j) * LS + t * kParamTile;
          const float* mn = vMins + (t * groups + g) * kParamTile;
          for (uint32_t i = 0; i < kParamTile; i += S::W) sum = S::fma(S::load(pj + i), S::load(mn + i), sum);
        }
        minSum[j * groups + g] = S::reduce(sum);
      }
    }
  }
}

// acc[m0 + j] += sum_r p_r * v_r over quantized value rows (see valueTile), CH vector chunks
// of the head per pass, from the weights of valueWeights.
template <class S, Storage VF, int MT, int CH, uint32_t DC, uint32_t GC>
void valueTileQ(const AttentionParams& p, uint32_t m0, const uint8_t* values, uint32_t rows, const float* w,
                const float* minSum, float* acc, const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  const uint32_t groups = D / GC;
  const uint32_t stride = p.pool.layout.valueRowBytes;
  for (uint32_t e0 = 0; e0 < D; e0 += CH * S::W) {
    typename S::V a[MT][CH];
    for (int j = 0; j < MT; ++j) {
      for (int c = 0; c < CH; ++c) a[j][c] = S::load(acc + (m0 + j) * D + e0 + c * S::W);
    }
    // Chunk c of the pass is in group e0 / GC + c * W / GC (W, CH and GC are powers of two),
    // so each weight sits at a constant offset from one pointer per row: no per-FMA address.
    const float* wPass = w + (e0 / GC) * kParamTile;
    for (uint32_t r = 0; r < rows; ++r) {
      if (e0 == 0) prefetchRow(ahead, r, stride);
      const uint8_t* vrow = values + static_cast<uint64_t>(r) * stride;
      const float* wr = wPass + (r / kParamTile) * MT * groups * kParamTile + r % kParamTile;
      typename S::V v[CH];
      // int4: chunk c + kPartner holds the high nibbles of chunk c's bytes when both are in
      // this pass (e0 is a multiple of CH * W, which GC divides or is divided by): one
      // widening load for both.
      constexpr int kPartner = static_cast<int>(GC / 2 / S::W);
      static_assert(VF != Storage::kInt4 || kPartner >= 1, "a chunk within one nibble half");
      for (int c = 0; c < CH; ++c) {
        const uint32_t e = e0 + c * S::W;
        if constexpr (VF == Storage::kInt8) {
          v[c] = S::loadI8(reinterpret_cast<const int8_t*>(vrow) + e);
        } else {
          const uint32_t g = e / GC, offset = e % GC;
          const uint8_t* bytes = vrow + g * (GC / 2) + offset % (GC / 2);
          if (offset < GC / 2 && c + kPartner < CH) {
            S::loadU4Pair(bytes, v[c], v[c + kPartner]);
          } else if (offset < GC / 2) {
            v[c] = S::loadU4Lo(bytes);
          } else if (c < kPartner) {  // its low half was in the previous pass
            v[c] = S::loadU4Hi(bytes);
          }
        }
      }
      for (int j = 0; j < MT; ++j) {
        for (int c = 0; c < CH; ++c) {
          a[j][c] = S::fma(S::set1(wr[(j * groups + (c * S::W) / GC) * kParamTile]), v[c], a[j][c]);
        }
      }
    }
    for (int j = 0; j < MT; ++j) {
      for (int c = 0; c < CH; ++c) {
        if constexpr (VF == Storage::kInt4) a[j][c] = S::add(a[j][c], S::set1(minSum[j * groups + (e0 + c * S::W) / GC]));
        S::store(acc + (m0 + j) * D + e0 + c * S::W, a[j][c]);
      }
    }
  }
}

template <class S, Storage VF, int MT, uint32_t DC, uint32_t GC>
void valueTileQAnyWidth(const AttentionParams& p, uint32_t m0, const uint8_t* values, uint32_t rows, uint32_t LS,
                        const float* prob, const float* vScales, const float* vMins, float* w, float* minSum, float* acc,
                        const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  valueWeights<S, VF, MT>(m0, rows, LS, D / GC, prob, vScales, vMins, w, minSum);
  constexpr int kWide = MT <= 4 ? 4 : 2;
  if (D % (kWide * S::W) == 0) {
    valueTileQ<S, VF, MT, kWide, DC, GC>(p, m0, values, rows, w, minSum, acc, ahead);
  } else if (D % (2 * S::W) == 0) {
    valueTileQ<S, VF, MT, 2, DC, GC>(p, m0, values, rows, w, minSum, acc, ahead);
  } else {
    valueTileQ<S, VF, MT, 1, DC, GC>(p, m0, values, rows, w, minSum, acc, ahead);
  }
}

template <class S, Storage VF, uint32_t DC, uint32_t GC>
void valueAllQFixed(const AttentionParams& p, uint32_t M, const uint8_t* values, uint32_t rows, uint32_t LS,
                    const float* prob, const float* vScales, const float* vMins, float* w, float* minSum, float* acc,
                    const uint8_t* ahead) {
  uint32_t m0 = 0;
  auto next = [&]() { const uint8_t* a = m0 == 0 ? ahead : nullptr; return a; };
  for (; m0 + 8 <= M; m0 += 8) {
    valueTileQAnyWidth<S, VF, 8, DC, GC>(p, m0, values, rows, LS, prob, vScales, vMins, w, minSum, acc, next());
  }
  if (m0 + 4 <= M) {
    valueTileQAnyWidth<S, VF, 4, DC, GC>(p, m0, values, rows, LS, prob, vScales, vMins, w, minSum, acc, next());
    m0 += 4;
  }
  if (m0 + 2 <= M) {
    valueTileQAnyWidth<S, VF, 2, DC, GC>(p, m0, values, rows, LS, prob, vScales, vMins, w, minSum, acc, next());
    m0 += 2;
  }
  if (m0 < M) valueTileQAnyWidth<S, VF, 1, DC, GC>(p, m0, values, rows, LS, prob, vScales, vMins, w, minSum, acc, next());
}

template <class S, Storage VF, uint32_t GC>
void valueAllQGroup(const AttentionParams& p, uint32_t M, const uint8_t* values, uint32_t rows, uint32_t LS,
                    const float* prob, const float* vScales, const float* vMins, float* w, float* minSum, float* acc,
                    const uint8_t* ahead) {
  switch (p.codec.headDim) {
    case 128: return valueAllQFixed<S, VF, 128, GC>(p, M, values, rows, LS, prob, vScales, vMins, w, minSum, acc, ahead);
    case 64: return valueAllQFixed<S, VF, 64, GC>(p, M, values, rows, LS, prob, vScales, vMins, w, minSum, acc, ahead);
    default: return valueAllQFixed<S, VF, 0, GC>(p, M, values, rows, LS, prob, vScales, vMins, w, minSum, acc, ahead);
  }
}

template <class S, Storage VF>
void valueAllQ(const AttentionParams& p, uint32_t M, const uint8_t* values, uint32_t rows, uint32_t LS,
               const float* prob, const float* vScales, const float* vMins, float* w, float* minSum, float* acc,
               const uint8_t* ahead) {
  switch (p.codec.groupSize) {
    case 32: return valueAllQGroup<S, VF, 32>(p, M, values, rows, LS, prob, vScales, vMins, w, minSum, acc, ahead);
    case 64: return valueAllQGroup<S, VF, 64>(p, M, values, rows, LS, prob, vScales, vMins, w, minSum, acc, ahead);
    default: return valueAllQGroup<S, VF, 128>(p, M, values, rows, LS, prob, vScales, vMins, w, minSum, acc, ahead);
  }
}
