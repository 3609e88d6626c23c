// Prefill attention: many query vectors per call (Tq x the GQA group), so the work is
// compute-bound and each block of keys and values is worth decoding to f32 once and reusing
// for every query. Included by attention_kernel.inl (after its helpers, before
// attentionRange, which hands calls with enough queries over here).
//
// Per tile of up to kPrefillTileBlocks consecutive blocks (kernel_table.h; TB rows): keys
// are decoded and transposed to kt[D][TB] so that the q.k micro-kernel
// vectorizes over rows (a register tile of MR queries x NV row vectors, one broadcast query
// element per multiply-add row: no horizontal sums); logits get the scale, beta and the
// causal mask; the online softmax updates (m, l) per query and leaves the rescale of the
// accumulator to the p.v micro-kernel (a register tile of MR queries x CH chunks of the head
// over the decoded value rows), which applies it as it loads the accumulator.

// kPrefillMinQueries (kernel_table.h): query vectors per call from which prefillRange runs;
// below it the decode tiles of attentionRange read each block about as fast as decoding it
// would cost.

// The logits and the transposed keys of a block use the block size as their row stride, so
// it must be a whole number of scratch rows (kScratchRowAlign); precision 'fast' keeps its
// own integer path.
inline bool prefillApplies(const AttentionParams& p, uint32_t M) {
  return M >= kPrefillMinQueries && p.pool.layout.blockSize % kScratchRowAlign == 0;
}

// Register tiles per vector width (32 registers with AVX-512, 16 with AVX2).
template <class S>
struct PrefillTiles {
  static constexpr int kDotQueries = S::W == 16 ? 12 : S::W == 8 ? 6 : 4;  // x 2 row vectors
  static constexpr int kValueQueries = S::W == 16 ? 6 : S::W == 8 ? 6 : 4;  // x kValueChunks
  static constexpr int kValueChunks = S::W == 16 ? 4 : 2;
};

// logits[m][c0, c0 + NV*W) = scale * q_m . k + beta for the MR queries from m0; q[i] is
// query m0 + i; kt is [D][B] (row r of the block in column r).
template <class S, int MR, int NV>
void prefillDots(const float* const* q, uint32_t D, const float* kt, uint32_t B, uint32_t c0, float scale,
                 const float* beta, float* logits) {
  using V = typename S::V;
  V acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NV; ++j) acc[i][j] = S::zero();
  }
  const float* col = kt + c0;
  for (uint32_t e = 0; e < D; ++e, col += B) {
    V k[NV];
    for (int j = 0; j < NV; ++j) k[j] = S::load(col + j * S::W);
    for (int i = 0; i < MR; ++i) {
      const V qv = S::set1(q[i][e]);
      for (int j = 0; j < NV; ++j) acc[i][j] = S::fma(qv, k[j], acc[i][j]);
    }
  }
  const V sc = S::set1(scale);
  for (int j = 0; j < NV; ++j) {
    const V b = S::load(beta + c0 + j * S::W);
    for (int i = 0; i < MR; ++i) S::store(logits + i * B + c0 + j * S::W, S::add(S::mul(acc[i][j], sc), b));
  }
}

// All row vectors of one tile of MR queries; B is the row stride of kt and the logits.
template <class S, int MR>
void prefillDotRows(const AttentionParams& p, const AttentionStream& s, uint32_t m0, const float* kt, uint32_t B,
                    uint32_t vecs, const float* beta, float* logits) {
  const uint32_t D = p.codec.headDim;
  const float* q[MR];
  for (int i = 0; i < MR; ++i) q[i] = queryRow(p, s, m0 + i);
  float* out = logits + static_cast<uint64_t>(m0) * B;
  uint32_t v = 0;
  for (; v + 2 <= vecs; v += 2) prefillDots<S, MR, 2>(q, D, kt, B, v * S::W, p.scale, beta, out);
  if (v < vecs) prefillDots<S, MR, 1>(q, D, kt, B, v * S::W, p.scale, beta, out);
}

// acc[m] = corr[m] * acc[m] + sum_r prob[m][r] v_r on chunks [e0, e0 + CH*W) of the head for
// the MR queries from m0 (v: decoded rows [rows][D]).
template <class S, int MR, int CH>
void prefillValueTile(const float* prob, uint32_t B, uint32_t m0, const float* v, uint32_t D, uint32_t rows,
                      uint32_t e0, const float* corr, float* acc) {
  using V = typename S::V;
  V a[MR][CH];
  for (int i = 0; i < MR; ++i) {
    const V c = S::set1(corr[m0 + i]);
    const float* src = acc + static_cast<uint64_t>(m0 + i) * D + e0;
    for (int j = 0; j < CH; ++j) a[i][j] = S::mul(S::load(src + j * S::W), c);
  }
  const float* pr = prob + static_cast<uint64_t>(m0) * B;
  const float* row = v + e0;
  for (uint32_t r = 0; r < rows; ++r, row += D) {
    V x[CH];
    for (int j = 0; j < CH; ++j) x[j] = S::load(row + j * S::W);
    for (int i = 0; i < MR; ++i) {
      const V pi = S::set1(pr[i * B + r]);
      for (int j = 0; j < CH; ++j) a[i][j] = S::fma(pi, x[j], a[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* dst = acc + static_cast<uint64_t>(m0 + i) * D + e0;
    for (int j = 0; j < CH; ++j) S::store(dst + j * S::W, a[i][j]);
  }
}

template <class S, int MR, int CH>
void prefillValueChunks(const float* prob, uint32_t B, uint32_t m0, const float* v, uint32_t D, uint32_t rows,
                        const float* corr, float* acc) {
  for (uint32_t e0 = 0; e0 < D; e0 += CH * S::W) prefillValueTile<S, MR, CH>(prob, B, m0, v, D, rows, e0, corr, acc);
}

template <class S, int MR>
void prefillValueQueries(const float* prob, uint32_t B, uint32_t m0, const float* v, uint32_t D, uint32_t rows,
                         const float* corr, float* acc) {
  constexpr int CH = PrefillTiles<S>::kValueChunks;
  if (D % (CH * S::W) == 0) {
    prefillValueChunks<S, MR, CH>(prob, B, m0, v, D, rows, corr, acc);
  } else if (D % (2 * S::W) == 0) {
    prefillValueChunks<S, MR, 2>(prob, B, m0, v, D, rows, corr, acc);
  } else {
    prefillValueChunks<S, MR, 1>(prob, B, m0, v, D, rows, corr, acc);
  }
}

// Partial attention of M >= kPrefillMinQueries query vectors over blocks [b0, b1): the same
// contract and results (up to f32 summation order) as attentionRange. Tiles start at b0, so
// they, like the tasks, do not depend on the thread count.
template <class S, Storage KF, Storage VF>
void prefillRange(const AttentionParams& p, const AttentionStream& s, uint32_t b0, uint32_t b1, const int32_t* qpos,
                  float* scratch, float* mOut, float* lOut, float* accOut, float* logitsOut) {
  const BlockLayout& L = p.pool.layout;
  const uint32_t D = p.codec.headDim, B = L.blockSize, g = p.queriesPerHead, G = p.codec.groupSize;
  const uint32_t M = p.tq * g;
  const uint32_t TB = B * kPrefillTileBlocks;  // row stride of the tile's logits and transposed keys
  constexpr float kNegInf = -__builtin_inff();
  for (uint32_t m = 0; m < M; ++m) { mOut[m] = kNegInf; lOut[m] = 0.0f; }
  for (uint64_t i = 0; i < static_cast<uint64_t>(M) * D; ++i) accOut[i] = 0.0f;
  int32_t minQpos = qpos[0];
  for (uint32_t t = 1; t < p.tq; ++t) minQpos = qpos[t] < minQpos ? qpos[t] : minQpos;

  // prefillScratchFloats' layout: logits [M][TB], transposed keys [D][TB], decoded rows
  // [TB][D] (keys, then values), the tile's beta and positions, a rescale factor per query.
  float* logits = scratch;
  float* kt = logits + static_cast<uint64_t>(M) * TB;
  float* rowsF32 = kt + static_cast<uint64_t>(TB) * D;
  float* beta = rowsF32 + static_cast<uint64_t>(TB) * D;
  int32_t* pos = reinterpret_cast<int32_t*>(beta + TB);
  float* corr = beta + 2 * TB;

  constexpr int MQ = PrefillTiles<S>::kDotQueries, MV = PrefillTiles<S>::kValueQueries;
  auto blockBase = [&](uint32_t blk) { return p.pool.base + static_cast<uint64_t>(s.kv.blockTable[blk]) * L.blockBytes; };
  auto blockRows = [&](uint32_t blk) { return minU32(B, static_cast<uint32_t>(s.kv.length) - blk * B); };
  for (uint32_t t0 = b0; t0 < b1; t0 += kPrefillTileBlocks) {
    const uint32_t t1 = minU32(b1, t0 + kPrefillTileBlocks);
    const uint8_t* next = t1 < b1 ? blockBase(t1) : nullptr;  // the first block of the next tile
    // Only a stream's last block can be partial, so the tile's rows are contiguous: block
    // t0 + j holds tile rows [j * B, j * B + its rows).
    uint32_t rows = 0;
    for (uint32_t blk = t0; blk < t1; ++blk) {
      const uint8_t* base = blockBase(blk);
      const uint32_t n = blockRows(blk);
      const int32_t* bpos = reinterpret_cast<const int32_t*>(base + L.positionsOffset);
      __builtin_memcpy(beta + rows, base + L.betaOffset, 4ull * n);
      __builtin_memcpy(pos + rows, bpos, 4ull * n);
      const uint8_t* ahead = blk + 1 < t1 ? blockBase(blk + 1) : next;
      float* dst = rowsF32 + static_cast<uint64_t>(rows) * D;
      if (p.rope.spec.dims != 0) {
        ropeKeyBlock<S, KF>(p, base, n, bpos, blk * B, dst);
      } else {
        RowDecoder<S, KF>::decode(base, n, L.keyRowBytes, D, G, dst, ahead);
      }
      rows += n;
    }

    // Keys to the transposed tile; the columns past `rows` up to a whole vector are 0.
    const uint32_t vecs = (rows + S::W - 1) / S::W;
    for (uint32_t r = 0; r < rows; ++r) {
      const float* src = rowsF32 + static_cast<uint64_t>(r) * D;
      for (uint32_t e = 0; e < D; ++e) kt[static_cast<uint64_t>(e) * TB + r] = src[e];
    }
    for (uint32_t e = 0; e < D; ++e) {
      for (uint32_t r = rows; r < vecs * S::W; ++r) kt[static_cast<uint64_t>(e) * TB + r] = 0.0f;
    }
    for (uint32_t r = rows; r < vecs * S::W; ++r) beta[r] = 0.0f;

    uint32_t m0 = 0;
    for (; m0 + MQ <= M; m0 += MQ) prefillDotRows<S, MQ>(p, s, m0, kt, TB, vecs, beta, logits);
    for (; m0 + 4 <= M; m0 += 4) prefillDotRows<S, 4>(p, s, m0, kt, TB, vecs, beta, logits);
    for (; m0 < M; ++m0) prefillDotRows<S, 1>(p, s, m0, kt, TB, vecs, beta, logits);

    int32_t maxPos = pos[0];
    for (uint32_t r = 1; r < rows; ++r) maxPos = pos[r] > maxPos ? pos[r] : maxPos;
    if (maxPos > minQpos) {
      for (uint32_t m = 0; m < M; ++m) {
        const int32_t cutoff = qpos[m / g];
        for (uint32_t r = 0; r < rows; ++r) {
          if (pos[r] > cutoff) logits[m * TB + r] = kNegInf;
        }
      }
    }

    if (logitsOut) {
      const uint64_t stride = static_cast<uint64_t>(s.kv.length);
      for (uint32_t m = 0; m < M; ++m) {
        __builtin_memcpy(logitsOut + m * stride + static_cast<uint64_t>(t0) * B, logits + m * TB, 4ull * rows);
      }
    }

    for (uint32_t m = 0; m < M; ++m) {
      float* lg = logits + m * TB;
      const float mNew = maxOf(blockMax<S>(lg, rows), mOut[m]);
      corr[m] = 1.0f;
      if (mNew == kNegInf) {  // every row so far is masked for this query
        for (uint32_t r = 0; r < rows; ++r) lg[r] = 0.0f;
        continue;
      }
      if (mNew != mOut[m]) {
        corr[m] = SimdScalar::exp(mOut[m] - mNew);
        lOut[m] *= corr[m];
        mOut[m] = mNew;
      }
      lOut[m] += expAndSum<S>(lg, rows, mNew);
    }

    uint32_t r0 = 0;
    for (uint32_t blk = t0; blk < t1; ++blk) {
      const uint32_t n = blockRows(blk);
      const uint8_t* ahead = blk + 1 < t1 ? blockBase(blk + 1) + L.valuesOffset : (next ? next + L.valuesOffset : nullptr);
      RowDecoder<S, VF>::decode(blockBase(blk) + L.valuesOffset, n, L.valueRowBytes, D, G,
                                rowsF32 + static_cast<uint64_t>(r0) * D, ahead);
      r0 += n;
    }
    m0 = 0;
    for (; m0 + MV <= M; m0 += MV) prefillValueQueries<S, MV>(logits, TB, m0, rowsF32, D, rows, corr, accOut);
    for (; m0 + 2 <= M; m0 += 2) prefillValueQueries<S, 2>(logits, TB, m0, rowsF32, D, rows, corr, accOut);
    for (; m0 < M; ++m0) prefillValueQueries<S, 1>(logits, TB, m0, rowsF32, D, rows, corr, accOut);
  }
}
