// Exact f32 attention over the full-precision rows of a stream that is still calibrating
// (at most calibrationRows rows, so a plain two-pass loop: logits, then softmax-weighted
// values). Same contract as the block attention: causal cutoff by position, log-sum-exp,
// attention mass added per row.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lowrank_cpu.h"

namespace kvc::cpu {

void denseAttention(const DenseAttentionArgs& a) {
  const uint32_t D = a.headDim;
  std::vector<float> logits(a.rows);
  for (uint32_t t = 0; t < a.tq; ++t) {
    for (uint32_t j = 0; j < a.queriesPerHead; ++j) {
      const float* q = a.queries + t * a.tokenStride + static_cast<uint64_t>(j) * D;
      float* o = a.out + t * a.tokenStride + static_cast<uint64_t>(j) * D;
      float m = -std::numeric_limits<float>::infinity();
      for (uint32_t i = 0; i < a.rows; ++i) {
        if (a.positions[i] > a.cutoff[t]) {
          logits[i] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float* k = a.keys + static_cast<uint64_t>(i) * D;
        float s = 0.0f;
        for (uint32_t d = 0; d < D; ++d) s += q[d] * k[d];
        logits[i] = s * a.scale;
        m = std::max(m, logits[i]);
      }
      std::fill(o, o + D, 0.0f);
      double l = 0.0;
      for (uint32_t i = 0; i < a.rows; ++i) {
        if (logits[i] == -std::numeric_limits<float>::infinity()) continue;
        const float p = std::exp(logits[i] - m);
        logits[i] = p;
        l += p;
        const float* v = a.values + static_cast<uint64_t>(i) * D;
        for (uint32_t d = 0; d < D; ++d) o[d] += p * v[d];
      }
      const float inv = l > 0 ? static_cast<float>(1.0 / l) : 0.0f;
      for (uint32_t d = 0; d < D; ++d) o[d] *= inv;
      if (a.lse) a.lse[t * a.lseTokenStride + j] = l > 0 ? m + static_cast<float>(std::log(l)) : -std::numeric_limits<float>::infinity();
      if (a.scores) {
        for (uint32_t i = 0; i < a.rows; ++i) {
          if (a.positions[i] <= a.cutoff[t]) a.scores[i] += logits[i] * inv;
        }
      }
    }
  }
}

}  // namespace kvc::cpu
