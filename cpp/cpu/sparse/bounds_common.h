// What every instance of the logit-bound kernel shares: the bias term and the NaN rule.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kvc/key_summary.h"
#include "kvc/key_summary.h"
#include "kvc/views.h"

namespace kvc::cpu {

// scale * qkBound + the largest beta of the block's summarized rows (the summary entry's
// maxBeta); NaN (a summary that cannot bound) becomes +Inf, so the block is always read.
inline float finishBound(const uint8_t* entry, float qkBound, float scale) {
  const float bound = scale * qkBound + *summaryMaxBeta(entry);
  return std::isnan(bound) ? INFINITY : bound;
}

inline bool hasSummaries(const PoolView& pool) { return pool.summaries && pool.layout.summaryBytes; }

}  // namespace kvc::cpu
