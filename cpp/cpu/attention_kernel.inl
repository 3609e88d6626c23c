// Decode/prefill attention over a range of blocks of one stream, producing a partial
// softmax state (m, l, acc) that the backend merges across ranges (split-K). Included into
// an ISA namespace after its Simd traits and row_decode.inl (see kernels_*.cpp).
// Dequantization is fused: rows are decoded chunk by chunk in registers (int8 / int4: see
// quantized_attention.inl), never copied.

// Query vector m of a stream is (token m / g, group head m % g).
inline const float* queryRow(const AttentionParams& p, const AttentionStream& s, uint32_t m) {
  return s.queries + (m / p.queriesPerHead) * p.tokenStride + (m % p.queriesPerHead) * p.codec.headDim;
}

inline uint32_t minU32(uint32_t a, uint32_t b) { return a < b ? a : b; }
inline float maxOf(float a, float b) { return a > b ? a : b; }

// Row stride of the logits in scratch: the block size padded to whole vectors.
inline uint32_t logitStride(const AttentionParams& p) {
  return (p.pool.layout.blockSize + kScratchRowAlign - 1) / kScratchRowAlign * kScratchRowAlign;
}


// logits[(m0 + j) * LS + r] = scale * acc_j summed + beta_r.
template <class S, int MT>
inline void storeLogits(const typename S::V* acc, uint32_t m0, uint32_t r, uint32_t LS, float scale, const float* beta,
                        float* logits) {
  if constexpr (MT % 4 == 0) {
    // Four horizontal sums at once cost about as much as one.
    for (int j = 0; j < MT; j += 4) {
      float sums[4];
      S::reduce4(acc[j], acc[j + 1], acc[j + 2], acc[j + 3], sums);
      for (int i = 0; i < 4; ++i) logits[(m0 + j + i) * LS + r] = sums[i] * scale + beta[r];
    }
  } else {
    for (int j = 0; j < MT; ++j) logits[(m0 + j) * LS + r] = S::reduce(acc[j]) * scale + beta[r];
  }
}

// logits[(m0 + j) * LS + r] = scale * q_j . k_r + beta_r for the MT queries of one tile.
// DC: the head dimension when known at compile time (0 = read it at run time). With it the
// chunk loops unroll completely and every accumulator stays in a register.
template <class S, Storage KF, int MT, uint32_t DC>
void dotTile(const AttentionParams& p, const AttentionStream& s, uint32_t m0, const uint8_t* keys, const float* beta,
             uint32_t rows, float* logits, const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim, G = p.codec.groupSize, LS = logitStride(p);
  // Quantized keys arrive decoded into f32 scratch rows (see attentionRange).
  const uint32_t stride = KF == p.codec.keyStorage ? p.pool.layout.keyRowBytes : 4 * D;
  const float* q[MT];
  for (int j = 0; j < MT; ++j) q[j] = queryRow(p, s, m0 + j);
  // Several rows per pass (as many as the accumulators fit in registers): each query chunk
  // is loaded once for all of them. With 32 vector registers, four rows of four queries: 16
  // independent accumulators cover the FMA latency on both pipes and the 16 dot products
  // reduce together (storeDots4x4, the same additions as storeLogits).
  constexpr int kRows = MT <= 4 ? (S::W == 16 ? 4 : 2) : 1;
  uint32_t r = 0;
  for (; r + kRows <= rows; r += kRows) {
    prefetchRows(ahead, r, kRows, stride);
    typename S::V acc[kRows][MT];
    for (int i = 0; i < kRows; ++i) {
      for (int j = 0; j < MT; ++j) acc[i][j] = S::zero();
    }
    for (uint32_t e = 0; e < D; e += S::W) {
      typename S::V k[kRows];
      for (int i = 0; i < kRows; ++i) k[i] = ChunkDecoder<S, KF>::load(keys + static_cast<uint64_t>(r + i) * stride, e, D, G);
      for (int j = 0; j < MT; ++j) {
        const typename S::V qv = S::load(q[j] + e);
        for (int i = 0; i < kRows; ++i) acc[i][j] = S::fma(k[i], qv, acc[i][j]);
      }
    }
    if constexpr (MT == 4 && kRows == 4) {
      S::storeDots4x4(acc, p.scale, beta + r, logits + m0 * LS + r, LS);
    } else {
      for (int i = 0; i < kRows; ++i) storeLogits<S, MT>(acc[i], m0, r + i, LS, p.scale, beta, logits);
    }
  }
  for (; r < rows; ++r) {
    prefetchRow(ahead, r, stride);
    typename S::V acc[MT];
    for (int j = 0; j < MT; ++j) acc[j] = S::zero();
    for (uint32_t e = 0; e < D; e += S::W) {
      const typename S::V k = ChunkDecoder<S, KF>::load(keys + static_cast<uint64_t>(r) * stride, e, D, G);
      for (int j = 0; j < MT; ++j) acc[j] = S::fma(k, S::load(q[j] + e), acc[j]);
    }
    storeLogits<S, MT>(acc, m0, r, LS, p.scale, beta, logits);
  }
}

// acc[m0 + j] += sum_r prob[(m0 + j) * B + r] * v_r for the MT queries of one tile, CH
// vector chunks of the head at a time: the MT x CH accumulators stay in registers for the
// whole block and each probability is broadcast once per row and pass.
template <class S, Storage VF, int MT, int CH, uint32_t DC>
void valueTile(const AttentionParams& p, uint32_t m0, const uint8_t* values, uint32_t rows, const float* prob,
               float* acc, const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim, G = p.codec.groupSize, LS = logitStride(p);
  const uint32_t stride = VF == p.codec.valueStorage ? p.pool.layout.valueRowBytes : 4 * D;
  for (uint32_t e0 = 0; e0 < D; e0 += CH * S::W) {
    typename S::V a[MT][CH];
    for (int j = 0; j < MT; ++j) {
      for (int c = 0; c < CH; ++c) a[j][c] = S::load(acc + (m0 + j) * D + e0 + c * S::W);
    }
    for (uint32_t r = 0; r < rows; ++r) {
      if (e0 == 0) prefetchRow(ahead, r, stride);
      const uint8_t* vrow = values + static_cast<uint64_t>(r) * stride;
      typename S::V v[CH];
      for (int c = 0; c < CH; ++c) v[c] = ChunkDecoder<S, VF>::load(vrow, e0 + c * S::W, D, G);
      for (int j = 0; j < MT; ++j) {
        const typename S::V pj = S::set1(prob[(m0 + j) * LS + r]);
        for (int c = 0; c < CH; ++c) a[j][c] = S::fma(pj, v[c], a[j][c]);
      }
    }
    for (int j = 0; j < MT; ++j) {
      for (int c = 0; c < CH; ++c) S::store(acc + (m0 + j) * D + e0 + c * S::W, a[j][c]);
    }
  }
}

template <class S, Storage VF, int MT, uint32_t DC>
void valueTileAnyWidth(const AttentionParams& p, uint32_t m0, const uint8_t* values, uint32_t rows, const float* prob,
                       float* acc, const uint8_t* ahead) {
  const uint32_t D = DC ? DC : p.codec.headDim;
  // At most 16 accumulators: 4 chunks for up to 4 queries, 2 for 8.
  constexpr int kWide = MT <= 4 ? 4 : 2;
  if (D % (kWide * S::W) == 0) {
    valueTile<S, VF, MT, kWide, DC>(p, m0, values, rows, prob, acc, ahead);
  } else if (D % (2 * S::W) == 0) {
    valueTile<S, VF, MT, 2, DC>(p, m0, values, rows, prob, acc, ahead);
  } else {
    valueTile<S, VF, MT, 1, DC>(p, m0, values, rows, prob, acc, ahead);
  }
}

template <class S, Storage KF, uint32_t DC>
void dotAllFixed(const AttentionParams& p, const AttentionStream& s, uint32_t M, const uint8_t* keys, const float* beta,
                 uint32_t rows, float* logits, const uint8_t* ahead) {
  uint32_t m0 = 0;
  // Only the first tile prefetches: the later ones find the block ahead's rows requested.
  auto next = [&]() { const uint8_t* a = m0 == 0 ? ahead : nullptr; return a; };
  for (; m0 + 8 <= M; m0 += 8) dotTile<S, KF, 8, DC>(p, s, m0, keys, beta, rows, logits, next());
  if (m0 + 4 <= M) { dotTile<S, KF, 4, DC>(p, s, m0, keys, beta, rows, logits, next()); m0 += 4; }
  if (m0 + 2 <= M) { dotTile<S, KF, 2, DC>(p, s, m0, keys, beta, rows, logits, next()); m0 += 2; }
  if (m0 < M) dotTile<S, KF, 1, DC>(p, s, m0, keys, beta, rows, logits, next());
}

// The head dimensions of common models get compile-time loops; others the generic ones.
template <class S, Storage KF>
void dotAll(const AttentionParams& p, const AttentionStream& s, uint32_t M, const uint8_t* keys, const float* beta,
            uint32_t rows, float* logits, const uint8_t* ahead) {
  switch (p.codec.headDim) {
    case 128: return dotAllFixed<S, KF, 128>(p, s, M, keys, beta, rows, logits, ahead);
    case 64: return dotAllFixed<S, KF, 64>(p, s, M, keys, beta, rows, logits, ahead);
    case 32: return dotAllFixed<S, KF, 32>(p, s, M, keys, beta, rows, logits, ahead);  // low-rank rows at rank 32
    default: return dotAllFixed<S, KF, 0>(p, s, M, keys, beta, rows, logits, ahead);
  }
}

template <class S, Storage VF, uint32_t DC>
void valueAllFixed(const AttentionParams& p, uint32_t M, const uint8_t* values, uint32_t rows, const float* prob,
                   float* acc, const uint8_t* ahead) {
  uint32_t m0 = 0;
  auto next = [&]() { const uint8_t* a = m0 == 0 ? ahead : nullptr; return a; };
  for (; m0 + 8 <= M; m0 += 8) valueTileAnyWidth<S, VF, 8, DC>(p, m0, values, rows, prob, acc, next());
  if (m0 + 4 <= M) { valueTileAnyWidth<S, VF, 4, DC>(p, m0, values, rows, prob, acc, next()); m0 += 4; }
  if (m0 + 2 <= M) { valueTileAnyWidth<S, VF, 2, DC>(p, m0, values, rows, prob, acc, next()); m0 += 2; }
  if (m0 < M) valueTileAnyWidth<S, VF, 1, DC>(p, m0, values, rows, prob, acc, next());
}

template <class S, Storage VF>
void valueAll(const AttentionParams& p, uint32_t M, const uint8_t* values, uint32_t rows, const float* prob, float* acc,
              const uint8_t* ahead) {
  switch (p.codec.headDim) {
    case 128: return valueAllFixed<S, VF, 128>(p, M, values, rows, prob, acc, ahead);
    case 64: return valueAllFixed<S, VF, 64>(p, M, values, rows, prob, acc, ahead);
    case 32: return valueAllFixed<S, VF, 32>(p, M, values, rows, prob, acc, ahead);
    default: return valueAllFixed<S, VF, 0>(p, M, values, rows, prob, acc, ahead);
  }
}

// Replaces logits[0, rows) by exp(logit - mNew) and returns their sum.
template <class S>
float expAndSum(float* x, uint32_t rows, float mNew) {
  const typename S::V shift = S::set1(mNew);
  typename S::V sum = S::zero();
  uint32_t r = 0;
  for (; r + S::W <= rows; r += S::W) {
    const typename S::V e = S::exp(S::add(S::load(x + r), S::mul(shift, S::set1(-1.0f))));
    S::store(x + r, e);
    sum = S::add(sum, e);
  }
  float total = S::reduce(sum);
  for (; r < rows; ++r) {
    x[r] = SimdScalar::exp(x[r] - mNew);
    total += x[r];
  }
  return total;
}

#include "quantized_attention.inl"
#include "fast_keys.inl"
#ifdef KVC_FAST_VNNI
#include "fast_values.inl"
#endif
#include "rope_kernel.inl"

// Largest logit of x[0, rows).
template <class S>
float blockMax(const float* x, uint32_t rows) {
  float best = x[0];
  uint32_t r = 0;
  if (rows >= static_cast<uint32_t>(S::W)) {
    typename S::V v = S::load(x);
    for (r = S::W; r + S::W <= rows; r += S::W) v = S::max(v, S::load(x + r));
    best = S::reduceMax(v);
  }
  for (; r < rows; ++r) best = x[r] > best ? x[r] : best;
  return best;
}

#include "prefill_kernel.inl"

// Quantized formats with a fused kernel for their group size decode in registers
// (quantized_attention.inl); other group sizes decode a block at a time into f32 scratch
// rows and run the f32 loops over them.
template <Storage F>
bool fusedDecode(const AttentionParams& p) {
  return isQuantized(F) && fusedGroupSize(p.codec.groupSize);
}

// Partial attention of the M = tq * g query vectors of stream `s` over blocks [b0, b1).
// scratch: attentionCallScratchFloats(M, codec, blockSize) floats. mOut/lOut: [M]; accOut: [M][D] (unnormalized).
// FAST: precision 'fast' for quantized keys with a fused group size (fast_keys.inl).
template <class S, Storage KF, Storage VF, bool FAST = false>
void attentionRange(const AttentionParams& p, const AttentionStream& s, uint32_t b0, uint32_t b1, const int32_t* qpos,
                    float* scratch, float* mOut, float* lOut, float* accOut, float* logitsOut) {
  const BlockLayout& L = p.pool.layout;
  const uint32_t D = p.codec.headDim, B = L.blockSize, g = p.queriesPerHead, LS = logitStride(p);
  const uint32_t M = p.tq * g;
  if constexpr (!FAST) {
    // Many queries (prefill): blocks decoded once and reused by all of them (prefill_kernel.inl).
    if (prefillApplies(p, M)) return prefillRange<S, KF, VF>(p, s, b0, b1, qpos, scratch, mOut, lOut, accOut, logitsOut);
  }
  const uint32_t groups = p.codec.groupSize ? D / p.codec.groupSize : 0;
  constexpr float kNegInf = -__builtin_inff();
  for (uint32_t m = 0; m < M; ++m) { mOut[m] = kNegInf; lOut[m] = 0.0f; }
  for (uint32_t i = 0; i < M * D; ++i) accOut[i] = 0.0f;
  int32_t minQpos = qpos[0];
  for (uint32_t t = 1; t < p.tq; ++t) minQpos = qpos[t] < minQpos ? qpos[t] : minQpos;

  // Scratch layout (see attentionScratchFloats).
  float* keyRows = scratch + static_cast<uint64_t>(M) * LS;
  float* valueRows = keyRows + static_cast<uint64_t>(B) * D;
  float* kScales = valueRows + static_cast<uint64_t>(B) * D;
  float* kMins = kScales + groups * LS;
  float* vScales = kMins + groups * LS;
  float* vMins = vScales + groups * LS;
  float* weights = vMins + groups * LS;
  float* minSum = weights + 8 * groups * LS;
  float* queries = minSum + 8 * groups;
  // precision 'fast' scores quantized keys of any group size from the stored integers.
  const bool fusedKeys = fusedDecode<KF>(p) || (FAST && isQuantized(KF)), fusedValues = fusedDecode<VF>(p);
  if (fusedKeys) {
    for (uint32_t m = 0; m < M; ++m) __builtin_memcpy(queries + m * D, queryRow(p, s, m), 4ull * D);
  }
#ifdef KVC_SIMD_AVX512
  if constexpr (!FAST && KF == Storage::kInt4 && S::W == 16) {
    // The transposed int4 key path's query group sums, once per range, in the scratch after the
    // queries (the fast query's space: at least M * kMaxTransposedGroups floats when D >= 128).
    if (fusedKeys && D % 128 == 0 && groups <= kMaxTransposedGroups) {
      int4QuerySums(queries, M, D, p.codec.groupSize, queries + static_cast<uint64_t>(M) * D);
    }
  }
#endif
  [[maybe_unused]] FastQuery fastQuery{};
  if constexpr (FAST) {
    fastQuery = fastQueryScratch(queries + static_cast<uint64_t>(M) * D, M, D, groups);
    if (fusedKeys) quantizeQueries(queries, M, D, p.codec.groupSize, fastQuery);
  }

  for (uint32_t blk = b0; blk < b1; ++blk) {
    const uint8_t* base = p.pool.base + static_cast<uint64_t>(s.kv.blockTable[blk]) * L.blockBytes;
    const uint32_t rows = minU32(B, static_cast<uint32_t>(s.kv.length) - blk * B);
    // The next blocks are elsewhere in the pool: the rows of block blk + kPrefetchBlocks are
    // prefetched while this block's rows are processed (see prefetchRow); at the start of a
    // range, the blocks before it at once.
    const uint8_t* next = blk + 1 < b1 ? p.pool.base + static_cast<uint64_t>(s.kv.blockTable[blk + 1]) * L.blockBytes : nullptr;
    if (next) {
      __builtin_prefetch(next + L.betaOffset);
      __builtin_prefetch(next + L.positionsOffset);
    }
    if (blk == b0) {
      for (uint32_t a = blk + 1; a < blk + kPrefetchBlocks && a < b1; ++a) {
        prefetchRow(p.pool.base + static_cast<uint64_t>(s.kv.blockTable[a]) * L.blockBytes, 0, L.blockBytes);
      }
    }
    const uint8_t* ahead = blk + kPrefetchBlocks < b1
                               ? p.pool.base + static_cast<uint64_t>(s.kv.blockTable[blk + kPrefetchBlocks]) * L.blockBytes
                               : nullptr;
    if (ahead) {  // the beta and position lines of the block ahead, with its rows
      prefetchRow(ahead + L.betaOffset, 0, 4 * B);
      prefetchRow(ahead + L.positionsOffset, 0, 4 * B);
    }
    const uint8_t* keys = base;
    const uint8_t* values = base + L.valuesOffset;
    const float* beta = reinterpret_cast<const float*>(base + L.betaOffset);
    const int32_t* pos = reinterpret_cast<const int32_t*>(base + L.positionsOffset);

    if (p.rope.spec.dims != 0) {
      // Keys stored before RoPE: decoded and rotated by position into f32 rows (rope_kernel.inl).
      ropeKeyBlock<S, KF>(p, keys, rows, pos, blk * B, keyRows);
      dotAll<S, Storage::kF32>(p, s, M, reinterpret_cast<const uint8_t*>(keyRows), beta, rows, scratch, nullptr);
    } else if constexpr (isQuantized(KF)) {
      if (fusedKeys) {
        gatherParams<S, KF>(keys, rows, L.keyRowBytes, D, p.codec.groupSize, kScales, kMins);
        if constexpr (FAST) {
          dotAllFast<KF>(p, fastQuery, M, keys, beta, rows, LS, kScales, kMins, scratch, ahead);
        } else {
          dotAllQ<S, KF>(p, queries, M, keys, beta, rows, LS, kScales, kMins, scratch, ahead);
        }
      } else {
        RowDecoder<S, KF>::decode(keys, rows, L.keyRowBytes, D, p.codec.groupSize, keyRows, ahead);
        dotAll<S, Storage::kF32>(p, s, M, reinterpret_cast<const uint8_t*>(keyRows), beta, rows, scratch, nullptr);
      }
    } else {
      dotAll<S, KF>(p, s, M, keys, beta, rows, scratch, ahead);
    }

    int32_t maxPos = pos[0];
    for (uint32_t r = 1; r < rows; ++r) maxPos = pos[r] > maxPos ? pos[r] : maxPos;
    if (maxPos > minQpos) {
      for (uint32_t m = 0; m < M; ++m) {
        const int32_t cutoff = qpos[m / g];
        for (uint32_t r = 0; r < rows; ++r) {
          if (pos[r] > cutoff) scratch[m * LS + r] = kNegInf;
        }
      }
    }

    if (logitsOut) {
      const uint64_t stride = static_cast<uint64_t>(s.kv.length);
      for (uint32_t m = 0; m < M; ++m) {
        float* dst = logitsOut + m * stride + static_cast<uint64_t>(blk) * B;
        __builtin_memcpy(dst, scratch + m * LS, 4ull * rows);
      }
    }

    // Fused value weights run over whole tiles of rows: the probabilities past `rows` are 0.
    const uint32_t paddedRows = fusedValues ? paramTiles(rows) * kParamTile : rows;
    for (uint32_t m = 0; m < M; ++m) {
      float* lg = scratch + m * LS;
      const float mNew = maxOf(blockMax<S>(lg, rows), mOut[m]);
      for (uint32_t r = rows; r < paddedRows; ++r) lg[r] = 0.0f;
      if (mNew == kNegInf) {  // every row so far is masked for this query
        for (uint32_t r = 0; r < rows; ++r) lg[r] = 0.0f;
        continue;
      }
      if (mNew != mOut[m]) {
        const float correction = SimdScalar::exp(mOut[m] - mNew);
        lOut[m] *= correction;
        float* a = accOut + m * D;
        const typename S::V c = S::set1(correction);
        for (uint32_t e = 0; e < D; e += S::W) S::store(a + e, S::mul(S::load(a + e), c));
        mOut[m] = mNew;
      }
      lOut[m] += expAndSum<S>(lg, rows, mNew);
    }

    const uint8_t* aheadValues = ahead ? ahead + L.valuesOffset : nullptr;
#ifdef KVC_FAST_VNNI
    if constexpr (FAST && VF == Storage::kInt8) {
      if (fusedValues && fastValues(p)) {
        gatherParams<S, VF>(values, rows, L.valueRowBytes, D, p.codec.groupSize, vScales, vMins);
        valueAllFastVnni(p, M, values, rows, LS, scratch, vScales, reinterpret_cast<uint8_t*>(weights), minSum, accOut,
                         aheadValues);
        continue;
      }
    }
#endif
    if constexpr (isQuantized(VF)) {
      if (fusedValues) {
        gatherParams<S, VF>(values, rows, L.valueRowBytes, D, p.codec.groupSize, vScales, vMins);
        valueAllQ<S, VF>(p, M, values, rows, LS, scratch, vScales, vMins, weights, minSum, accOut, aheadValues);
      } else {
        RowDecoder<S, VF>::decode(values, rows, L.valueRowBytes, D, p.codec.groupSize, valueRows, aheadValues);
        valueAll<S, Storage::kF32>(p, M, reinterpret_cast<const uint8_t*>(valueRows), rows, scratch, accOut, nullptr);
      }
    } else {
      valueAll<S, VF>(p, M, values, rows, scratch, accOut, aheadValues);
    }
  }
}

// scores[r] += sum over the M queries of exp(logit - lse): the attention probability each
// row received (masked rows hold -inf and add exactly 0). Rows outer, queries inner, so the
// score array is read and written once per call rather than once per query.
template <class S>
void accumulateMass(const float* logits, uint64_t stride, const float* lse, uint32_t M, uint32_t rows, float* scores) {
  uint32_t r = 0;
  for (; r + S::W <= rows; r += S::W) {
    typename S::V sum = S::load(scores + r);
    for (uint32_t m = 0; m < M; ++m) {
      if (lse[m] == -__builtin_inff()) continue;
      sum = S::add(sum, S::exp(S::add(S::load(logits + m * stride + r), S::set1(-lse[m]))));
    }
    S::store(scores + r, sum);
  }
  for (; r < rows; ++r) {
    for (uint32_t m = 0; m < M; ++m) {
      if (lse[m] != -__builtin_inff()) scores[r] += SimdScalar::exp(logits[m * stride + r] - lse[m]);
    }
  }
}
