// Eviction of one sequence: score every stream, plan how many rows each keeps, choose the
// rows (protected sinks and recent rows first, then top-k; Ada-KV across the heads of a
// layer when adaptive), and rebuild the streams with Cache::keepRows. All or nothing.
#pragma once
#include <cstdint>
#include <vector>

#include "../cache.h"
#include "policy.h"

namespace kvc {

Status evictSequence(Cache& cache, uint64_t id, const PolicySpec& policy, const BudgetSpec& budget, EvictionReport* report);

// The rows one stream keeps, ascending, given its scores and how many to keep.
//   scores  [n]
void selectStreamRows(const float* scores, uint32_t n, uint32_t keep, uint32_t sinks, uint32_t recent,
                      std::vector<int32_t>* rows);

}  // namespace kvc
