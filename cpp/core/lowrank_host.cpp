// Low-rank attention on the host over lifted rows, for the low-rank caches the block kernels
// cannot serve (CacheConfig::hostLowRank):
// - with rope, keys are stored as coefficients of pre-RoPE keys (the projection is fitted
//   where keys are low-rank and do not depend on the position). RoPE rotates each channel pair
//   by an angle of the row's position, which is not diagonal in the basis, so q . R_p B c has
//   no r-dimensional form for all p at once: each row is lifted (k = B c, r x D), rotated at
//   its position and dotted with the query rotated at its own position. Lifting each row once
//   per call serves all tq x GQA query vectors of the call (rotating the query per row instead
//   would cost as much per query vector);
// - with unequal key and value ranks (or unprojected values), key and value rows differ in
//   width, which the block kernels (one row width) do not read.
// Cost per call and stream: n x D x r_k for the key lift plus the RoPE of n rows (cos / sin
// from the angle-addition tables of kvc/rope.h), against n x r_k for the block kernels; values
// are summed as stored (coefficients) and lifted once per output. Attention is exact f32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cache.h"
#include "kvc/rope.h"

namespace kvc {

namespace {

// cos and signed sin of `position` for channels [0, dims) from the level tables of kvc/rope.h
// (the position's base-256 digits combined by angle addition, in f32 as the CPU kernels do);
// c and s are scratch of dims floats, the results are returned through cOut / sOut.
void ropeAngles(const std::vector<float>& cosT, const std::vector<float>& sinT, uint32_t dims, uint32_t position, float* c,
                float* s, const float** cOut, const float** sOut) {
  const float* ca = cosT.data() + static_cast<size_t>(position & (kRopeLevelSize - 1)) * dims;
  const float* sa = sinT.data() + static_cast<size_t>(position & (kRopeLevelSize - 1)) * dims;
  for (uint32_t level = 1; level < kRopeLevels; ++level) {
    const uint32_t j = (position >> (level * kRopeLevelBits)) & (kRopeLevelSize - 1);
    if (j == 0) continue;
    const size_t row = (static_cast<size_t>(level) * kRopeLevelSize + j) * dims;
    const float* cb = cosT.data() + row;
    const float* sb = sinT.data() + row;
    for (uint32_t d = 0; d < dims; ++d) {
      const float c0 = ca[d], s0 = sa[d];
      c[d] = c0 * cb[d] - s0 * sb[d];
      s[d] = s0 * cb[d] + c0 * sb[d];
    }
    ca = c, sa = s;
  }
  *cOut = ca, *sOut = sa;
}

// Rotates x[0, dims) in place by RoPE at `position` (cos / signed sin per channel, kvc/rope.h).
void ropeVector(float* x, const RopeSpec& spec, const float* c, const float* s) {
  const uint32_t half = spec.dims / 2;
  for (uint32_t j = 0; j < half; ++j) {
    const uint32_t d0 = spec.style == 0 ? 2 * j : j, d1 = spec.style == 0 ? 2 * j + 1 : j + half;
    const float x0 = x[d0], x1 = x[d1];
    x[d0] = x0 * c[d0] + x1 * s[d0];
    x[d1] = x1 * c[d1] + x0 * s[d1];
  }
}

}  // namespace

// Exact attention of one stream over lifted keys [n][D] (post-RoPE) and value rows [n][RV]
// (coefficients, lifted once per output by the caller, or unprojected values), with the
// contract of the block attention (causal cutoff by position, logit bias beta of compacted
// rows or nullptr for none, log-sum-exp, attention mass).
// Both products run through the backend's projection kernel (register tiles, no horizontal
// sums): logits [n][M] = K Q^T with the M = tq x g query vectors as the columns of a [D][M]
// "basis" (padded to 16 columns, the widest vector), and outputs [M][RV] = P V with P the
// unnormalized softmax weights [M][n] as rows and the value rows as the basis.
struct LiftedScratch {
  std::vector<float> qt, logits, weights;
};

static void attendLifted(const LowRankKernels& lr, const float* keys, const float* values, uint32_t RV, const int32_t* positions,
                         const float* beta, uint32_t n, uint32_t D, const float* queries, uint32_t g, uint32_t tq, const int32_t* cutoff, float scale,
                         float* out, float* lse, uint64_t lseTokenStride, float* scores, LiftedScratch& w) {
  const uint32_t M = tq * g, Mp = (M + 15) / 16 * 16;
  w.qt.assign(static_cast<size_t>(D) * Mp, 0.0f);
  for (uint32_t m = 0; m < M; ++m) {
    for (uint32_t d = 0; d < D; ++d) w.qt[static_cast<size_t>(d) * Mp + m] = queries[static_cast<size_t>(m) * D + d];
  }
  w.logits.resize(static_cast<size_t>(n) * Mp);
  lr.project(keys, D, n, D, w.qt.data(), Mp, scale, w.logits.data(), Mp);
  for (uint32_t i = 0; beta && i < n; ++i) {
    if (beta[i] == 0.0f) continue;
    float* row = w.logits.data() + static_cast<size_t>(i) * Mp;
    for (uint32_t m = 0; m < M; ++m) row[m] += beta[i];
  }
  w.weights.resize(static_cast<size_t>(M) * n);
  std::vector<double> sums(M);
  for (uint32_t m = 0; m < M; ++m) {
    const uint32_t t = m / g;
    float* p = w.weights.data() + static_cast<size_t>(m) * n;
    float mx = -std::numeric_limits<float>::infinity();
    for (uint32_t i = 0; i < n; ++i) {
      if (positions[i] <= cutoff[t]) mx = std::max(mx, w.logits[static_cast<size_t>(i) * Mp + m]);
    }
    double l = 0.0;
    for (uint32_t i = 0; i < n; ++i) {
      p[i] = positions[i] <= cutoff[t] ? std::exp(w.logits[static_cast<size_t>(i) * Mp + m] - mx) : 0.0f;
      l += p[i];
    }
    sums[m] = l;
    if (lse) lse[t * lseTokenStride + m % g] = l > 0 ? mx + static_cast<float>(std::log(l)) : -std::numeric_limits<float>::infinity();
    const float inv = l > 0 ? static_cast<float>(1.0 / l) : 0.0f;
    if (scores) {
      for (uint32_t i = 0; i < n; ++i) scores[i] += p[i] * inv;
    }
  }
  lr.project(w.weights.data(), n, M, n, values, RV, 1.0f, out, RV);
  for (uint32_t m = 0; m < M; ++m) {
    const float inv = sums[m] > 0 ? static_cast<float>(1.0 / sums[m]) : 0.0f;
    for (uint32_t d = 0; d < RV; ++d) out[static_cast<size_t>(m) * RV + d] *= inv;
  }
}

Status Cache::attentionChunkLowRankHost(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1) {
  const LowRankKernels& lr = *lowRank_;
  const uint32_t heads = config_.kvHeads, D = config_.headDim, R = config_.storedDim();
  const uint32_t g = config_.queriesPerHead(), tq = t1 - t0;
  const uint64_t tokenStride = static_cast<uint64_t>(config_.queryHeads) * D;
  const uint64_t seqStride = tokenStride * r.tq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  RopeSpec spec = config_.rope();
  spec.byRank = r.rankPositions;
  if (spec.dims != 0 && hostRopeCos_.empty()) buildRopeTables(spec, &hostRopeCos_, &hostRopeSin_);
  std::vector<float> cBuf(spec.dims), sBuf(spec.dims);

  std::vector<float> keys, coefKeys, basisT, values, heldValues, queries(static_cast<size_t>(tq) * g * D), out(queries.size());
  LiftedScratch scratch;
  std::vector<float> beta;
  std::vector<int32_t> positions, cutoff(tq);
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq = sequences_.at(ids[i]).get();
    for (uint32_t h = 0; h < heads; ++h) {
      Stream& s = seq->stream(r.layer, heads, h);
      const uint32_t n = static_cast<uint32_t>(s.rows());
      const uint32_t first = n - r.tq + t0;  // row of query token t0
      // Keys lifted to [n][D]; values as stored: [n][RV] coefficients (lifted after the
      // weighted sum, once per output) or [n][D] rows of a calibrating stream.
      const uint32_t RV = s.basis ? config_.valueStoredDim() : D;
      keys.resize(static_cast<size_t>(n) * D);
      positions.resize(n);
      const float* valueRows;
      const float* rowBeta = nullptr;  // calibrating rows are never compacted
      if (!s.basis) {
        heldValues.resize(static_cast<size_t>(n) * D);
        s.held.read(n, D, keys.data(), heldValues.data());
        std::memcpy(positions.data(), s.pendingPositions.data(), 4ull * n);
        valueRows = heldValues.data();
      } else {
        coefKeys.resize(static_cast<size_t>(n) * R);
        values.resize(static_cast<size_t>(n) * RV);
        beta.resize(n);
        StreamView view{s.blocks.data(), s.length};
        KVC_RETURN_IF_ERROR(backend_->readRows(pool(), codec(), view, 0, n, coefKeys.data(), values.data(), beta.data(),
                                               positions.data()));
        rowBeta = beta.data();
        // The lift of many rows as a projection onto the transposed basis ([r][D]): the
        // projection's register tiles sum over r with no horizontal reduction per element.
        basisT.resize(static_cast<size_t>(R) * D);
        for (uint32_t d = 0; d < D; ++d) {
          for (uint32_t j = 0; j < R; ++j) basisT[static_cast<size_t>(j) * D + d] = s.basis->keys[static_cast<size_t>(d) * R + j];
        }
        lr.project(coefKeys.data(), R, n, R, basisT.data(), D, 1.0f, keys.data(), D);
        valueRows = values.data();
      }
      for (uint32_t t = 0; t < tq; ++t) cutoff[t] = positions[first + t];
      const float* q = r.queries + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      for (uint32_t t = 0; t < tq; ++t) std::memcpy(queries.data() + static_cast<size_t>(t) * g * D, q + t * tokenStride, 4ull * g * D);
      if (spec.dims != 0) {
        // Keys at their stored positions (or their rank in the stream); each query vector of
        // the group at the position (or rank) of its token.
        const float* c;
        const float* sn;
        for (uint32_t k = 0; k < n; ++k) {
          ropeAngles(hostRopeCos_, hostRopeSin_, spec.dims, spec.byRank ? k : static_cast<uint32_t>(positions[k]), cBuf.data(), sBuf.data(), &c, &sn);
          ropeVector(keys.data() + static_cast<size_t>(k) * D, spec, c, sn);
        }
        for (uint32_t t = 0; t < tq; ++t) {
          const uint32_t p = spec.byRank ? first + t : static_cast<uint32_t>(cutoff[t]);
          ropeAngles(hostRopeCos_, hostRopeSin_, spec.dims, p, cBuf.data(), sBuf.data(), &c, &sn);
          for (uint32_t j = 0; j < g; ++j) ropeVector(queries.data() + (static_cast<size_t>(t) * g + j) * D, spec, c, sn);
        }
      }
      float* scores = nullptr;
      if (r.accumulateScores) {
        if (s.scores.size() != static_cast<size_t>(n)) s.scores.resize(n, 0.0f);
        scores = s.scores.data();
      }
      float* lse = r.lse ? r.lse + (static_cast<uint64_t>(i) * r.tq + t0) * config_.queryHeads + static_cast<uint64_t>(h) * g : nullptr;
      out.resize(static_cast<size_t>(tq) * g * RV);
      attendLifted(lr, keys.data(), valueRows, RV, positions.data(), rowBeta, n, D, queries.data(), g, tq, cutoff.data(), scale, out.data(), lse,
                   config_.queryHeads, scores, scratch);
      float* o = r.out + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      for (uint32_t t = 0; t < tq; ++t) {
        const float* src = out.data() + static_cast<size_t>(t) * g * RV;
        float* dst = o + t * tokenStride;
        if (s.basis && !config_.fullValues()) {
          lr.lift(src, RV, g, RV, s.basis->values.data(), D, dst, D);
        } else {
          std::memcpy(dst, src, 4ull * g * D);
        }
      }
    }
  }
  return Status::ok();
}

}  // namespace kvc
