// What every instance of the logit-bound kernel shares: the bias term and the NaN rule.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kvc/key_summary.h"
#include "kvc/views.h"

namespace kvc::cpu {

// scale * qkBound + the largest beta of the block's rows below `length`; NaN (a summary that
// cannot bound) becomes +Inf, so the block is always read.
inline float finishBound(const uint8_t* block, const BlockLayout& L, int32_t length, uint32_t b, float qkBound,
                         float scale) {
  const uint32_t rows = static_cast<uint32_t>(std::min<int64_t>(L.blockSize, static_cast<int64_t>(length) - int64_t{b} * L.blockSize));
  const float* beta = reinterpret_cast<const float*>(block + L.betaOffset);
  float maxBeta = -INFINITY;
  for (uint32_t r = 0; r < rows; ++r) maxBeta = std::max(maxBeta, beta[r]);
  const float bound = scale * qkBound + maxBeta;
  return std::isnan(bound) ? INFINITY : bound;
}

}  // namespace kvc::cpu
