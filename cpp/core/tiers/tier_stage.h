// Eviction and compaction of a tiered sequence (ARCHITECTURE §9). The code that scores rows,
// selects them and fits compacted rows reads a stream as one run of one format; a TierStage
// gives it that: a private copy of the sequence whose streams are one run of tier 0's format
// (the aged rows decoded once and re-encoded in tier 0's format, tier 0's own blocks shared).
// Cache::keepRowsTiered rebuilds the staged streams and then re-tiers them into the real
// sequence: the lowest tier takes the older rows in whole blocks, tier 0 keeps the rest.
#pragma once
#include <cstdint>
#include <vector>

#include "../sequence.h"
#include "kvc/status.h"

namespace kvc {

class Cache;

class TierStage {
 public:
  TierStage() = default;
  ~TierStage() { reset(); }
  TierStage(const TierStage&) = delete;
  TierStage& operator=(const TierStage&) = delete;

  // Stages the streams marked in `streams` ([layer * kvHeads + head], empty: every stream);
  // the others are left empty (length 0). All or nothing.
  Status build(Cache& cache, const Sequence& seq, const std::vector<uint8_t>& streams);
  Sequence& sequence() { return seq_; }
  const Sequence& sequence() const { return seq_; }
  // Blocks the stage holds (its own and the shared blocks of tier 0).
  uint64_t blocks() const {
    uint64_t n = 0;
    for (const Stream& s : seq_.streams) n += s.blocks.size();
    return n;
  }
  // Returns the staged blocks to the pool (main thread).
  void reset();

 private:
  Cache* cache_ = nullptr;
  Sequence seq_;
};

}  // namespace kvc
