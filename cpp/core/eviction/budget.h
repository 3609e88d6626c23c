// How many rows each stream keeps: per-stream shares from { keep } / { ratio } / per-layer
// ratios, optionally redistributed over layers (pyramid). Which rows is selection's job.
#pragma once
#include <cstdint>
#include <vector>

#include "../config.h"
#include "policy.h"

namespace kvc {

// Integers that sum to `total`, each at most caps[i], proportional to weights (water-filling:
// an entry that would exceed its cap is clipped and the rest re-shared), rounded by largest
// remainder (ties: lower index). Requires total <= sum of caps over entries with weight > 0.
std::vector<int64_t> apportion(int64_t total, const std::vector<double>& weights, const std::vector<int64_t>& caps);

// Uniform share of every stream, [layers * kvHeads]: what uniform per-head budgets keep and
// what adaptive budgets start from (their per-layer totals are the sums of these).
//   lengths  [layers * kvHeads] current stream lengths
Status planShares(const CacheConfig& c, const int32_t* lengths, const BudgetSpec& b, std::vector<int64_t>* shares);

}  // namespace kvc
