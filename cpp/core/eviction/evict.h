// Eviction of one sequence: plan how many rows each stream keeps, choose the rows (protected
// sinks and recent rows first, then top-k: Backend::selectRows where the rows live; Ada-KV
// across the heads of a layer on host scores when adaptive), and rebuild the streams with
// Cache::keepRows. All or nothing.
#pragma once
#include <cstdint>
#include <vector>

#include "../cache.h"
#include "policy.h"

namespace kvc {

Status evictSequence(Cache& cache, uint64_t id, const PolicySpec& policy, const BudgetSpec& budget, EvictionReport* report);

}  // namespace kvc
