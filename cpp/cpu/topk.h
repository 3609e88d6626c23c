// Eviction's top-k for CPU code: the rule lives in kvc/row_select.h (shared with the core's
// budget planner and reproduced by device backends).
#pragma once
#include "kvc/row_select.h"

namespace kvc::cpu {
using kvc::orderedScoreKey;
using kvc::selectTopK;
}  // namespace kvc::cpu
