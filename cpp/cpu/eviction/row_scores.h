// The CPU backend's eviction numerics (kvc/compaction_ops.h): per-row scores that read keys
// (key norm; mean attention of recorded queries for SnapKV and TOVA) and keep-set selection
// with the rule of kvc/row_select.h. Scores are computed from the keys as readRows decodes
// them (original, unrotated space) with beta added to the logits as attention does;
// probabilities are accumulated in double.
#pragma once
#include <cstdint>
#include <vector>

#include "kvc/backend.h"

namespace kvc::cpu {

class ThreadPool;

// Backend::rowScores and selectRows of the CPU backend; `rows` is that backend (readRows),
// `pool` its threads (one stream per task).
Status rowScores(Backend& rows, ThreadPool& pool, const PoolView& poolView, const RowCodec& codec,
                 const RowScoreInput* streams, uint32_t count, float* const* scores);
Status selectRows(Backend& rows, ThreadPool& pool, const PoolView& poolView, const RowCodec& codec,
                  const RowSelectInput* streams, uint32_t count, std::vector<int32_t>* keep);

}  // namespace kvc::cpu
