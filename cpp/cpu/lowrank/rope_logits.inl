// Logits over low-rank keys stored before RoPE (kvc/lowrank_ops.h, RopeLogitsArgs), the row
// dots they end with and the softmax exponentials of the host low-rank path, for one vector
// width S and a lift tile of RT rows (included inside an ISA namespace by lowrank_<isa>.cpp,
// after project.inl and rope_angles.inl).

// out[m * outStride + i] = scale * rows[i] . q[m]: each row vector is loaded once per four
// queries; a tail of L that is not a whole vector is summed in scalar.
template <class S>
void rowDotsImpl(const float* rows, uint64_t rowStride, uint32_t n, uint32_t L, const float* q, uint32_t M, float scale,
                 float* out, uint64_t outStride) {
  const uint32_t whole = L / S::W * S::W;
  for (uint32_t i = 0; i < n; ++i) {
    const float* x = rows + i * rowStride;
    uint32_t m = 0;
    for (; m + 4 <= M; m += 4) {
      const float* q0 = q + static_cast<uint64_t>(m) * L;
      typename S::V a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
      for (uint32_t d = 0; d < whole; d += S::W) {
        const typename S::V v = S::load(x + d);
        a0 = S::fma(v, S::load(q0 + d), a0);
        a1 = S::fma(v, S::load(q0 + L + d), a1);
        a2 = S::fma(v, S::load(q0 + 2 * L + d), a2);
        a3 = S::fma(v, S::load(q0 + 3 * L + d), a3);
      }
      float sums[4];
      S::reduce4(a0, a1, a2, a3, sums);
      for (uint32_t d = whole; d < L; ++d) {
        for (uint32_t k = 0; k < 4; ++k) sums[k] += x[d] * q0[k * L + d];
      }
      for (uint32_t k = 0; k < 4; ++k) out[(m + k) * outStride + i] = sums[k] * scale;
    }
    for (; m < M; ++m) {
      const float* qm = q + static_cast<uint64_t>(m) * L;
      typename S::V a = S::zero();
      for (uint32_t d = 0; d < whole; d += S::W) a = S::fma(S::load(x + d), S::load(qm + d), a);
      float sum = S::reduce(a);
      for (uint32_t d = whole; d < L; ++d) sum += x[d] * qm[d];
      out[m * outStride + i] = sum * scale;
    }
  }
}

// Rotates x[0, dims) by the half-style pairs (i, i + dims/2) with cos c and signed sin s.
template <class S>
inline void rotateHalves(float* __restrict x, uint32_t dims, const float* __restrict c, const float* __restrict s) {
  const uint32_t h = dims / 2, whole = h / S::W * S::W;
  uint32_t i = 0;
  for (; i < whole; i += S::W) {
    const typename S::V x0 = S::load(x + i), x1 = S::load(x + h + i);
    S::store(x + i, S::fma(x1, S::load(s + i), S::mul(x0, S::load(c + i))));
    S::store(x + h + i, S::fma(x0, S::load(s + h + i), S::mul(x1, S::load(c + h + i))));
  }
  for (; i < h; ++i) {
    const float x0 = x[i], x1 = x[i + h];
    x[i] = x0 * c[i] + x1 * s[i];
    x[i + h] = x1 * c[i + h] + x0 * s[i + h];
  }
}

// R(p) = R(hi) R(lo) for p = hi + lo, lo = p mod 256 (rotations of one pair commute), so
// q . R(p) k = (R(hi)^T q) . R(lo) k: a tile whose rows share hi (runs of 256 consecutive
// positions do) rotates each row by the level-0 table row of lo, with no angle addition per
// row, against queries rotated back by hi once per run. Tiles that straddle a run (gapped
// positions) take each row's full angle against the queries as given.
template <class S, int RT>
void ropeLogitsImpl(const RopeLogitsArgs& a) {
  const uint32_t D = a.headDim, dims = a.rope.spec.dims, lowMask = kRopeLevelSize - 1;
  float* tile = a.scratch;
  float* cBuf = tile + static_cast<uint64_t>(kRopeLogitsTileRows) * D;
  float* sBuf = cBuf + dims;
  float* sBack = sBuf + dims;
  float* qBack = sBack + dims;  // [M][D]: the queries rotated back by `backHi`
  uint32_t backHi = 0;
  bool haveBack = false;
  for (uint32_t i0 = 0; i0 < a.rows; i0 += kRopeLogitsTileRows) {
    const uint32_t rows = a.rows - i0 < kRopeLogitsTileRows ? a.rows - i0 : kRopeLogitsTileRows;
    // The lift k = B c of the tile as a projection onto the transposed basis: register tiles
    // of RT rows sum over r with no horizontal reduction.
    projectImpl<S, RT>(a.coef + i0 * a.coefStride, a.coefStride, rows, a.rank, a.basisT, D, 1.0f, tile, D);
    const uint32_t hi = a.positions[i0] & ~lowMask;
    bool shared = true;
    for (uint32_t i = 1; i < rows; ++i) shared = shared && (a.positions[i0 + i] & ~lowMask) == hi;
    const float* q = a.queries;
    if (shared && hi != 0) {
      if (!haveBack || backHi != hi) {
        const float* c;
        const float* s;
        ropeAngles<S>(a.rope, hi, cBuf, sBuf, &c, &s);
        for (uint32_t d = 0; d < dims; ++d) sBack[d] = -s[d];  // R(hi)^T: the signed sines negated
        for (uint32_t m = 0; m < a.M; ++m) {
          float* x = qBack + static_cast<uint64_t>(m) * D;
          __builtin_memcpy(x, a.queries + static_cast<uint64_t>(m) * D, 4ull * D);
          rotateHalves<S>(x, dims, c, sBack);
        }
        backHi = hi, haveBack = true;
      }
      q = qBack;
    }
    for (uint32_t i = 0; i < rows; ++i) {
      const uint32_t position = a.positions[i0 + i];
      const float* c;
      const float* s;
      if (shared) {
        c = a.rope.cosTable + static_cast<uint64_t>(position & lowMask) * dims;
        s = a.rope.sinTable + static_cast<uint64_t>(position & lowMask) * dims;
      } else {
        ropeAngles<S>(a.rope, position, cBuf, sBuf, &c, &s);
      }
      rotateHalves<S>(tile + static_cast<uint64_t>(i) * D, dims, c, s);
    }
    rowDotsImpl<S>(tile, D, rows, D, q, a.M, a.scale, a.logits + i0, a.logitStride);
  }
}

// out[m][j] = sum_i w[m][i] v[i][j] for M weight rows [M][n] (wStride apart) over n value
// rows [n][RV]: four weight rows at a time, so each value vector is loaded once per four
// outputs however few rows M has (decode: M = g); pairs of vectors, then single vectors,
// then scalar columns.
template <class S, int MT>
inline void weightedSumTile(const float* w, uint64_t wStride, uint32_t n, const float* v, uint32_t RV, float* out) {
  const uint32_t whole = RV / S::W * S::W;
  uint32_t j = 0;
  for (; j + 2 * S::W <= whole; j += 2 * S::W) {
    typename S::V acc[MT][2];
    for (int m = 0; m < MT; ++m) acc[m][0] = acc[m][1] = S::zero();
    for (uint32_t i = 0; i < n; ++i) {
      const typename S::V v0 = S::load(v + static_cast<uint64_t>(i) * RV + j), v1 = S::load(v + static_cast<uint64_t>(i) * RV + j + S::W);
      for (int m = 0; m < MT; ++m) {
        const typename S::V p = S::set1(w[m * wStride + i]);
        acc[m][0] = S::fma(p, v0, acc[m][0]);
        acc[m][1] = S::fma(p, v1, acc[m][1]);
      }
    }
    for (int m = 0; m < MT; ++m) {
      S::store(out + static_cast<uint64_t>(m) * RV + j, acc[m][0]);
      S::store(out + static_cast<uint64_t>(m) * RV + j + S::W, acc[m][1]);
    }
  }
  for (; j < whole; j += S::W) {
    typename S::V acc[MT];
    for (int m = 0; m < MT; ++m) acc[m] = S::zero();
    for (uint32_t i = 0; i < n; ++i) {
      const typename S::V v0 = S::load(v + static_cast<uint64_t>(i) * RV + j);
      for (int m = 0; m < MT; ++m) acc[m] = S::fma(S::set1(w[m * wStride + i]), v0, acc[m]);
    }
    for (int m = 0; m < MT; ++m) S::store(out + static_cast<uint64_t>(m) * RV + j, acc[m]);
  }
  for (; j < RV; ++j) {
    for (int m = 0; m < MT; ++m) {
      float a = 0.0f;
      for (uint32_t i = 0; i < n; ++i) a += w[m * wStride + i] * v[static_cast<uint64_t>(i) * RV + j];
      out[static_cast<uint64_t>(m) * RV + j] = a;
    }
  }
}

template <class S>
void weightedSumImpl(const float* w, uint64_t wStride, uint32_t M, uint32_t n, const float* v, uint32_t RV, float* out) {
  uint32_t m = 0;
  for (; m + 4 <= M; m += 4) weightedSumTile<S, 4>(w + m * wStride, wStride, n, v, RV, out + static_cast<uint64_t>(m) * RV);
  for (; m < M; ++m) weightedSumTile<S, 1>(w + m * wStride, wStride, n, v, RV, out + static_cast<uint64_t>(m) * RV);
}

template <class S>
double expShiftImpl(float* x, uint32_t n, float shift) {
  const typename S::V m = S::set1(-shift);
  typename S::V sum = S::zero();
  uint32_t i = 0;
  for (; i + S::W <= n; i += S::W) {
    const typename S::V e = S::exp(S::add(S::load(x + i), m));
    S::store(x + i, e);
    sum = S::add(sum, e);
  }
  double total = S::reduce(sum);
  for (; i < n; ++i) {
    x[i] = SimdScalar::exp(x[i] - shift);
    total += x[i];
  }
  return total;
}
