// The backend's numerics operations as the core calls them, with a stopgap for a backend
// that does not implement one yet (UNSUPPORTED, e.g. a device backend still being ported):
// the streams' encoded rows are copied bit-exactly (readRawRows / writeRawRows) into the
// pool of a CPU backend made for the call, which computes what the device would have had
// on the CPU. No numerics here: only row copies through the Backend interface.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cache.h"
#include "kvc/compaction_ops.h"

namespace kvc {

// Backend::rowScores / selectRows of the cache's backend, or of a host copy.
Status backendRowScores(Cache& cache, const RowScoreInput* streams, uint32_t count, float* const* scores);
Status backendSelectRows(Cache& cache, const RowSelectInput* streams, uint32_t count, std::vector<int32_t>* keep);

// Backend::compactStreams of the cache's backend, or of a host copy (then *fit is a staged
// fit that already holds the rebuilt rows, and backendApplyCompactionFit copies them over).
Status backendCompactStreams(Cache& cache, const CompactionStreamInput* streams, uint32_t count,
                             const compaction::Options& options, const CompactionControl& control,
                             CompactionStreamReport* reports, std::unique_ptr<CompactionFit>* fit);
Status backendApplyCompactionFit(Cache& cache, const CompactionFit& fit, uint32_t index, const StreamView& rebuilt);

}  // namespace kvc
