// Precision tiers (cache option tiers, ARCHITECTURE §9): the block format of every tier.
//
// All tiers share the one block pool, so a block of any tier occupies one pool slot of the top
// tier's blockBytes. A lower tier stores fewer bytes per row, so its blocks hold more rows: a
// whole multiple of the tier above's rows per block, as many as fit in the slot. A stream's
// block table then runs from its oldest tier to tier 0 (the newest rows), each run of one
// format; every aged block is full, so row r of a run sits in block r / rowsPerBlock.
// The kernels see a tier through its own PoolView (same base, the tier's BlockLayout with the
// slot size as blockBytes) and RowCodec: they need no change.
#pragma once
#include <cstdint>
#include <vector>

#include "../config.h"

namespace kvc {

struct TierFormat {
  Storage keys = Storage::kF16;
  Storage values = Storage::kF16;
  uint32_t windowRows = 0;   // rows the tier keeps before aging (0: the last tier keeps all)
  uint32_t rowsPerBlock = 0;
  BlockLayout layout;        // blockBytes = the pool slot (tier 0's blockBytes)
};

// The formats of config.tiers (config.tiered()), tier 0 first. Call after validateTiers.
std::vector<TierFormat> tierFormats(const CacheConfig& config);
// Tier count and rows, formats (tiers[0] equals keys/values), no tier using more bytes per
// row than the one above, and the options tiers does not support yet.
Status validateTiers(const CacheConfig& config);

// One run of same-format blocks of a stream: blocks [firstBlock, firstBlock + blocks) holding
// rows [firstRow, firstRow + rows).
struct TierRun {
  uint32_t tier = 0;
  uint32_t firstBlock = 0;
  uint32_t blocks = 0;
  int32_t firstRow = 0;
  int32_t rows = 0;
};

}  // namespace kvc
