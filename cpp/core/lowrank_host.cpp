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
// Cost per call and stream: n x D x (r_k + r_v) for the lifts plus n x dims/2 sine-cosine
// pairs, against n x r_k for the block kernels; attention itself is then exact f32 over the
// lifted rows (the calibration kernel, denseAttention).
#include <cmath>
#include <cstring>
#include <vector>

#include "cache.h"
#include "kvc/rope.h"

namespace kvc {

namespace {

// Rotates x[0, dims) in place by RoPE at position p, angles in double from the frequencies of
// kvc/rope.h (freq: [dims / 2]).
void ropeVector(float* x, const RopeSpec& spec, const std::vector<double>& freq, double p) {
  const uint32_t half = spec.dims / 2;
  for (uint32_t j = 0; j < half; ++j) {
    const uint32_t d0 = spec.style == 0 ? 2 * j : j, d1 = spec.style == 0 ? 2 * j + 1 : j + half;
    const double a = p * freq[j], c = std::cos(a), s = std::sin(a);
    const double x0 = x[d0], x1 = x[d1];
    x[d0] = static_cast<float>(x0 * c - x1 * s);
    x[d1] = static_cast<float>(x1 * c + x0 * s);
  }
}

}  // namespace

Status Cache::attentionChunkLowRankHost(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1) {
  const LowRankKernels& lr = *lowRank_;
  const uint32_t heads = config_.kvHeads, D = config_.headDim, R = config_.storedDim(), RV = config_.valueStoredDim();
  const uint32_t g = config_.queriesPerHead(), tq = t1 - t0;
  const uint64_t tokenStride = static_cast<uint64_t>(config_.queryHeads) * D;
  const uint64_t seqStride = tokenStride * r.tq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  RopeSpec spec = config_.rope();
  spec.byRank = r.rankPositions;
  std::vector<double> freq(spec.dims / 2);
  for (uint32_t j = 0; j < freq.size(); ++j) freq[j] = ropeFrequency(spec.theta, spec.dims, j);

  std::vector<float> keys, values, coefKeys, coefValues, queries(static_cast<size_t>(tq) * g * D), out(queries.size());
  std::vector<int32_t> positions, cutoff(tq);
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq = sequences_.at(ids[i]).get();
    for (uint32_t h = 0; h < heads; ++h) {
      Stream& s = seq->stream(r.layer, heads, h);
      const uint32_t n = static_cast<uint32_t>(s.rows());
      const uint32_t first = n - r.tq + t0;  // row of query token t0
      keys.resize(static_cast<size_t>(n) * D);
      values.resize(static_cast<size_t>(n) * D);
      positions.resize(n);
      if (!s.basis) {
        std::memcpy(keys.data(), s.pendingKeys.data(), 4ull * keys.size());
        std::memcpy(values.data(), s.pendingValues.data(), 4ull * values.size());
        std::memcpy(positions.data(), s.pendingPositions.data(), 4ull * n);
      } else {
        coefKeys.resize(static_cast<size_t>(n) * R);
        coefValues.resize(static_cast<size_t>(n) * RV);
        StreamView view{s.blocks.data(), s.length};
        KVC_RETURN_IF_ERROR(backend_->readRows(pool(), codec(), view, 0, n, coefKeys.data(), coefValues.data(), nullptr,
                                               positions.data()));
        lr.lift(coefKeys.data(), R, n, R, s.basis->keys.data(), D, keys.data(), D);
        liftValueRows(coefValues.data(), n, *s.basis, values.data());
      }
      for (uint32_t t = 0; t < tq; ++t) cutoff[t] = positions[first + t];
      const float* q = r.queries + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      for (uint32_t t = 0; t < tq; ++t) std::memcpy(queries.data() + static_cast<size_t>(t) * g * D, q + t * tokenStride, 4ull * g * D);
      if (spec.dims != 0) {
        // Keys at their stored positions (or their rank in the stream); each query vector of
        // the group at the position (or rank) of its token.
        for (uint32_t k = 0; k < n; ++k) ropeVector(keys.data() + static_cast<size_t>(k) * D, spec, freq, spec.byRank ? k : positions[k]);
        for (uint32_t t = 0; t < tq; ++t) {
          const double p = spec.byRank ? static_cast<double>(first + t) : static_cast<double>(cutoff[t]);
          for (uint32_t j = 0; j < g; ++j) ropeVector(queries.data() + (static_cast<size_t>(t) * g + j) * D, spec, freq, p);
        }
      }
      float* scores = nullptr;
      if (r.accumulateScores) {
        if (s.scores.size() != static_cast<size_t>(n)) s.scores.resize(n, 0.0f);
        scores = s.scores.data();
      }
      DenseAttentionArgs a;
      a.rows = n;
      a.headDim = D;
      a.queriesPerHead = g;
      a.tq = tq;
      a.keys = keys.data();
      a.values = values.data();
      a.positions = positions.data();
      a.cutoff = cutoff.data();
      a.queries = queries.data();
      a.out = out.data();
      a.tokenStride = static_cast<uint64_t>(g) * D;
      a.lse = r.lse ? r.lse + (static_cast<uint64_t>(i) * r.tq + t0) * config_.queryHeads + static_cast<uint64_t>(h) * g : nullptr;
      a.lseTokenStride = config_.queryHeads;
      a.scores = scores;
      a.scale = scale;
      lr.denseAttention(a);
      float* o = r.out + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      for (uint32_t t = 0; t < tq; ++t) std::memcpy(o + t * tokenStride, out.data() + static_cast<size_t>(t) * g * D, 4ull * g * D);
    }
  }
  return Status::ok();
}

}  // namespace kvc
