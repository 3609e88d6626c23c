// Low-rank attention on the host, for the low-rank caches the block kernels cannot serve
// (CacheConfig::hostLowRank):
// - with rope, keys are stored as coefficients of pre-RoPE keys (the projection is fitted
//   where keys are low-rank and do not depend on the position). RoPE is not diagonal in the
//   basis, so q . R_p B c has no r-dimensional form for all p at once; any exact form costs
//   D x r per row, and lifting each row once (k = B c) shares that cost by all tq x GQA query
//   vectors of the call. The backend's fused kernel (RopeLogitsArgs, kvc/lowrank_ops.h) lifts
//   a tile of rows into cache-resident scratch, rotates it and dots it with the queries;
//   A backend that lifts keys itself (Backend::attendsLiftedKeys) serves the streams with
//   bases; this path then serves only the calibrating ones (rows held on the host);
// - with unequal key and value ranks (or unprojected values), key and value rows differ in
//   width, which the CPU block kernels (one row width) do not read (the CUDA kernel does:
//   Backend::attendsValueDim); without rope the logits are
//   r-dimensional (coefficients against q' = B^T q).
// Values are summed as stored (coefficients) and lifted once per output. Attention is exact f32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cache.h"
#include "kvc/rope.h"

namespace kvc {


// Softmax and value sum of one stream from its logits [M][n] (M = tq x g query vectors, scaled),
// with the contract of the block attention (causal cutoff by position, logit bias beta of
// compacted rows or nullptr for none, log-sum-exp, attention mass): the weights overwrite the
// logits, and outputs [M][RV] = P V run through the backend's weighted-sum kernel (each value row loaded once per four query vectors). Values are coefficients (lifted once per output by the caller)
// or unprojected rows.
static void softmaxValues(const LowRankKernels& lr, float* logits, const float* values, uint32_t RV, const int32_t* positions,
                          const float* beta, uint32_t n, uint32_t g, uint32_t tq, const int32_t* cutoff, float* out, float* lse,
                          uint64_t lseTokenStride, float* scores) {
  const uint32_t M = tq * g;
  std::vector<double> sums(M);
  for (uint32_t m = 0; m < M; ++m) {
    const uint32_t t = m / g;
    float* p = logits + static_cast<size_t>(m) * n;
    float mx = -std::numeric_limits<float>::infinity();
    for (uint32_t i = 0; i < n; ++i) {
      if (positions[i] > cutoff[t]) {
        p[i] = -std::numeric_limits<float>::infinity();
      } else if (beta) {
        p[i] += beta[i];
      }
      mx = std::max(mx, p[i]);
    }
    double l = 0.0;
    if (mx == -std::numeric_limits<float>::infinity()) {
      std::fill(p, p + n, 0.0f);
    } else {
      l = lr.expShift(p, n, mx);
    }
    sums[m] = l;
    if (lse) lse[t * lseTokenStride + m % g] = l > 0 ? mx + static_cast<float>(std::log(l)) : -std::numeric_limits<float>::infinity();
    const float inv = l > 0 ? static_cast<float>(1.0 / l) : 0.0f;
    if (scores) {
      for (uint32_t i = 0; i < n; ++i) scores[i] += p[i] * inv;
    }
  }
  lr.weightedSum(logits, n, M, n, values, RV, out);
  for (uint32_t m = 0; m < M; ++m) {
    const float inv = sums[m] > 0 ? static_cast<float>(1.0 / sums[m]) : 0.0f;
    for (uint32_t d = 0; d < RV; ++d) out[static_cast<size_t>(m) * RV + d] *= inv;
  }
}

// Channel d of the half order holds channel halfOrder(d) of a model with interleaved pairs:
// pairs (2i, 2i+1) become (i, i + dims/2), so the RoPE kernel runs on contiguous halves.
static uint32_t halfOrderSource(uint32_t d, uint32_t dims) {
  if (d >= dims) return d;
  return d < dims / 2 ? 2 * d : 2 * (d - dims / 2) + 1;
}

Status Cache::attentionChunkLowRankHost(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1,
                                        bool calibratingOnly) {
  const LowRankKernels& lr = *lowRank_;
  const uint32_t heads = config_.kvHeads, D = config_.headDim, R = config_.storedDim();
  const uint32_t g = config_.queriesPerHead(), tq = t1 - t0, M = tq * g;
  const uint64_t tokenStride = static_cast<uint64_t>(config_.queryHeads) * D;
  const uint64_t seqStride = tokenStride * r.tq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  RopeSpec spec = config_.rope();
  spec.byRank = r.rankPositions;
  if (spec.dims != 0 && hostRopeCos_.empty()) {
    // Tables in the half order of the fused kernel (RopeLogitsArgs): the channels of each row
    // permuted for interleaved models.
    std::vector<float> c, sn;
    buildRopeTables(spec, &c, &sn);
    hostRopeCos_.resize(c.size());
    hostRopeSin_.resize(sn.size());
    for (size_t row = 0; row < c.size() / spec.dims; ++row) {
      for (uint32_t d = 0; d < spec.dims; ++d) {
        const uint32_t src = spec.style == 0 ? halfOrderSource(d, spec.dims) : d;
        hostRopeCos_[row * spec.dims + d] = c[row * spec.dims + src];
        hostRopeSin_[row * spec.dims + d] = sn[row * spec.dims + src];
      }
    }
  }
  RopeView halfRope;
  halfRope.spec = spec;
  halfRope.spec.style = 1;
  halfRope.cosTable = hostRopeCos_.data();
  halfRope.sinTable = hostRopeSin_.data();
  auto source = [&](uint32_t d) { return spec.dims != 0 && spec.style == 0 ? halfOrderSource(d, spec.dims) : d; };
  std::vector<float> cBuf(spec.dims), sBuf(spec.dims);

  std::vector<float> coefKeys, basisT, values, beta, logits, projected, ropeScratch;
  std::vector<float> queries(static_cast<size_t>(M) * D), rotated(queries.size()), out(queries.size());
  std::vector<int32_t> positions, cutoff(tq);
  std::vector<uint32_t> ropePositions;
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq = sequences_.at(ids[i]).get();
    for (uint32_t h = 0; h < heads; ++h) {
      Stream& s = seq->stream(r.layer, heads, h);
      if (calibratingOnly && s.basis) continue;
      const uint32_t n = static_cast<uint32_t>(s.rows());
      const uint32_t first = n - r.tq + t0;  // row of query token t0
      // Values as stored: [n][RV] coefficients (lifted after the weighted sum, once per
      // output) or [n][D] rows of a calibrating stream.
      const uint32_t RV = s.basis ? config_.valueStoredDim() : D;
      positions.resize(n);
      const float* keyRows;  // [n][KW]: full rows of a calibrating stream, else coefficients
      const float* valueRows;
      const float* rowBeta = nullptr;  // calibrating rows are never compacted
      if (!s.basis) {
        std::memcpy(positions.data(), s.pendingPositions.data(), 4ull * n);
        coefKeys.resize(static_cast<size_t>(n) * D);
        values.resize(static_cast<size_t>(n) * D);
        s.held.read(n, D, coefKeys.data(), values.data());
        keyRows = coefKeys.data();
        valueRows = values.data();
      } else {
        coefKeys.resize(static_cast<size_t>(n) * R);
        values.resize(static_cast<size_t>(n) * RV);
        beta.resize(n);
        StreamView view{s.blocks.data(), s.length};
        KVC_RETURN_IF_ERROR(backend_->readRows(pool(), codec(), view, 0, n, coefKeys.data(), values.data(), beta.data(),
                                               positions.data()));
        keyRows = coefKeys.data();
        valueRows = values.data();
        rowBeta = beta.data();
      }
      for (uint32_t t = 0; t < tq; ++t) cutoff[t] = positions[first + t];
      const float* q = r.queries + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      for (uint32_t t = 0; t < tq; ++t) std::memcpy(queries.data() + static_cast<size_t>(t) * g * D, q + t * tokenStride, 4ull * g * D);
      logits.resize(static_cast<size_t>(M) * n);
      if (spec.dims != 0) {
        // Each query vector of the group at the position (or rank) of its token, then in the
        // kernel's half channel order; keys at their stored positions (or rank in the stream).
        const float* c;
        const float* sn;
        for (uint32_t t = 0; t < tq; ++t) {
          const uint32_t p = spec.byRank ? first + t : static_cast<uint32_t>(cutoff[t]);
          ropeLevelAngles(hostRopeCos_.data(), hostRopeSin_.data(), spec.dims, p, cBuf.data(), sBuf.data(), &c, &sn);
          for (uint32_t j = 0; j < g; ++j) {
            const size_t m = static_cast<size_t>(t) * g + j;
            for (uint32_t d = 0; d < D; ++d) rotated[m * D + d] = queries[m * D + source(d)];
            ropeApply(rotated.data() + m * D, halfRope.spec, c, sn);
          }
        }
        ropePositions.resize(n);
        for (uint32_t k = 0; k < n; ++k) ropePositions[k] = spec.byRank ? k : static_cast<uint32_t>(positions[k]);
        // A calibrating stream's rows are their own lift: an identity "basis" of rank D.
        const uint32_t KW = s.basis ? R : D;
        basisT.assign(static_cast<size_t>(KW) * D, 0.0f);
        for (uint32_t d = 0; d < D; ++d) {
          for (uint32_t j = 0; j < KW; ++j) {
            basisT[static_cast<size_t>(j) * D + d] = s.basis ? s.basis->keys[static_cast<size_t>(source(d)) * R + j] : (source(d) == j ? 1.0f : 0.0f);
          }
        }
        ropeScratch.resize(ropeLogitsScratchFloats(D, spec.dims, M));
        RopeLogitsArgs a;
        a.rows = n, a.headDim = D, a.rank = KW;
        a.coef = keyRows, a.coefStride = KW;
        a.basisT = basisT.data();
        a.positions = ropePositions.data();
        a.rope = halfRope;
        a.queries = rotated.data(), a.M = M, a.scale = scale;
        a.logits = logits.data(), a.logitStride = n;
        a.scratch = ropeScratch.data();
        lr.ropeLogits(a);
      } else if (s.basis) {
        // Keys already hold RoPE: logits in r dimensions against q' = B^T q.
        projected.resize(static_cast<size_t>(M) * R);
        lr.project(queries.data(), D, M, D, s.basis->keys.data(), R, 1.0f, projected.data(), R);
        lr.rowDots(keyRows, R, n, R, projected.data(), M, scale, logits.data(), n);
      } else {
        lr.rowDots(keyRows, D, n, D, queries.data(), M, scale, logits.data(), n);
      }
      float* scores = nullptr;
      if (r.accumulateScores) {
        if (s.scores.size() != static_cast<size_t>(n)) s.scores.resize(n, 0.0f);
        scores = s.scores.data();
      }
      float* lse = r.lse ? r.lse + (static_cast<uint64_t>(i) * r.tq + t0) * config_.queryHeads + static_cast<uint64_t>(h) * g : nullptr;
      out.resize(static_cast<size_t>(M) * RV);
      softmaxValues(lr, logits.data(), valueRows, RV, positions.data(), rowBeta, n, g, tq, cutoff.data(), out.data(), lse, config_.queryHeads,
                    scores);
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
