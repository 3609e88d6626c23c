// Eviction requests as the core sees them: where row scores come from, which rows are
// protected, and how many rows each stream keeps (ARCHITECTURE §4.3). Plain data, checked
// by validatePolicy / validateBudget; lib/eviction-policy.ts is the first check.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kvc/status.h"

namespace kvc {

enum class ScoreSource : uint8_t {
  kRecency = 0,      // row index (newer rows higher): sliding window, StreamingLLM
  kAccumulated,      // Stream::scores, the attention mass accumulated by attention (H2O)
  kObservation,      // attention of the newest `window` recorded query tokens, max-pooled (SnapKV)
  kLastQuery,        // attention of the newest recorded query token (TOVA)
  kKeyNorm,          // -||k||_2: low-norm keys first
  kRandom,           // a counter-based hash of (seed, stream, row)
  kGiven,            // scores supplied by the caller (custom policies)
};

struct PolicySpec {
  ScoreSource source = ScoreSource::kRecency;
  uint32_t sinks = 0;   // the first `sinks` rows of every stream are protected
  uint32_t recent = 0;  // the last `recent` rows of every stream are protected
  uint32_t window = 0;  // kObservation: query tokens of the observation window
  uint32_t pool = 1;    // kObservation: max-pool kernel (odd)
  uint32_t seed = 0;    // kRandom
  // kObservation / kLastQuery on a cache with rope: rows and queries rotated at their ranks in
  // the stream (attention's positions: 'rank') instead of their stored positions.
  bool rankPositions = false;
  // kGiven: scores of every stream concatenated in stream order (layer-major), each stream
  // `length` entries: [sum of lengths]. Higher = keep.
  const float* given = nullptr;
  uint64_t givenCount = 0;
};

struct BudgetSpec {
  enum class Kind : uint8_t { kKeep = 0, kRatio, kLayerRatios };
  Kind kind = Kind::kRatio;
  uint32_t keep = 0;                 // kKeep: rows per stream
  double ratio = 1.0;                // kRatio: fraction of each stream's rows
  std::vector<double> layerRatios;   // kLayerRatios: [layers]
  bool adaptive = false;             // Ada-KV: heads of a layer compete for the layer's rows
  double safeguard = 0.2;            // adaptive: each head keeps >= ceil(safeguard * its uniform share)
  bool pyramid = false;              // redistribute the total over layers, decreasing upwards
  double slope = 0.5;                // pyramid: bottom layer weight 1 + slope, top 1 - slope
};

struct EvictionReport {
  uint64_t rowsBefore = 0;
  uint64_t rowsAfter = 0;
  std::vector<int32_t> keptPerStream;  // [layers * kvHeads]
  int64_t blocksFreed = 0;             // pool blocks released minus blocks allocated (copy-on-write)
  int64_t bytesFreed = 0;
};

Status validatePolicy(const PolicySpec& p);
Status validateBudget(const BudgetSpec& b, uint32_t layers);

}  // namespace kvc
