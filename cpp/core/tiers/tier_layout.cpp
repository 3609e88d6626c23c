// Block formats of the precision tiers (tier_layout.h) and their validation.
#include "tier_layout.h"

#include <string>

#include "kvc/generated/schema.h"

namespace kvc {

namespace {

BlockLayout naturalLayout(const CacheConfig& c, Storage keys, Storage values, uint32_t rowsPerBlock) {
  return makeBlockLayout(rowsPerBlock, rowBytes(keys, c.storedDim(), c.groupSize), rowBytes(values, c.storedDim(), c.groupSize));
}

}  // namespace

std::vector<TierFormat> tierFormats(const CacheConfig& c) {
  std::vector<TierFormat> out;
  const uint32_t slot = c.blockLayout().blockBytes;
  uint32_t rows = c.blockSize;
  for (size_t k = 0; k < c.tiers.size(); ++k) {
    const TierSpec& t = c.tiers[k];
    // The largest multiple of the tier above's rows per block that still fits in one slot
    // (tier 0 is the slot itself). validateTiers guarantees the multiple 1 fits.
    uint32_t best = rows;
    if (k > 0) {
      for (uint32_t m = 2; static_cast<uint64_t>(rows) * m <= schema::cache::kBlockSizeMax * 64ull; ++m) {
        if (naturalLayout(c, t.keys, t.values, rows * m).blockBytes > slot) break;
        best = rows * m;
      }
    }
    rows = best;
    TierFormat f;
    f.keys = t.keys;
    f.values = t.values;
    f.windowRows = t.rows;
    f.rowsPerBlock = rows;
    f.layout = naturalLayout(c, t.keys, t.values, rows);
    f.layout.blockBytes = slot;
    out.push_back(f);
  }
  return out;
}

Status validateTiers(const CacheConfig& c) {
  namespace t = schema::tiers;
  const size_t n = c.tiers.size();
  if (n < t::kCountMin || n > t::kCountMax) {
    return invalidArgument("tiers must list " + std::to_string(t::kCountMin) + " to " + std::to_string(t::kCountMax) + " tiers (got " +
                           std::to_string(n) + ")");
  }
  if (c.tiers[0].keys != c.keys || c.tiers[0].values != c.values) {
    return invalidArgument("tiers[0] sets the formats rows are appended in: keys and values must equal tiers[0].keys and tiers[0].values");
  }
  const uint32_t slot = c.blockLayout().blockBytes;
  for (size_t k = 0; k < n; ++k) {
    const std::string name = "tiers[" + std::to_string(k) + "]";
    const bool last = k + 1 == n;
    if (last && c.tiers[k].rows != 0) return invalidArgument(name + ".rows must be omitted: the last tier keeps every older row");
    if (!last && (c.tiers[k].rows < t::kRowsMin || c.tiers[k].rows > t::kRowsMax)) {
      return invalidArgument(name + ".rows must be an integer in [1, 2^31 - 1]");
    }
    if (static_cast<int>(c.tiers[k].keys) >= kStorageCount || static_cast<int>(c.tiers[k].values) >= kStorageCount) {
      return invalidArgument(name + ": unknown storage format");
    }
    if (k > 0) {
      const uint32_t above = rowBytes(c.tiers[k - 1].keys, c.storedDim(), c.groupSize) + rowBytes(c.tiers[k - 1].values, c.storedDim(), c.groupSize);
      const uint32_t here = rowBytes(c.tiers[k].keys, c.storedDim(), c.groupSize) + rowBytes(c.tiers[k].values, c.storedDim(), c.groupSize);
      if (here > above) {
        return invalidArgument(name + " (" + storageName(c.tiers[k].keys) + "/" + storageName(c.tiers[k].values) + ", " +
                               std::to_string(here) + " bytes per row) must not use more bytes per row than " + "tiers[" +
                               std::to_string(k - 1) + "] (" + std::to_string(above) + ")");
      }
    }
  }
  // Every tier's blocks must fit in a pool slot (a multiple of the tier above's rows).
  const std::vector<TierFormat> formats = tierFormats(c);
  for (size_t k = 1; k < n; ++k) {
    if (naturalLayout(c, formats[k].keys, formats[k].values, formats[k - 1].rowsPerBlock).blockBytes > slot) {
      return invalidArgument("tiers[" + std::to_string(k) + "]: a block of " + std::to_string(formats[k - 1].rowsPerBlock) +
                             " rows does not fit in the " + std::to_string(slot) + "-byte block of tiers[0]");
    }
  }
  if (c.lowRank()) return unsupported("tiers cannot be combined with lowRank yet (coefficient rows have one format per cache)");
  if (c.ropeDims != 0) return unsupported("tiers cannot be combined with rope yet (attention over tier runs needs stored-position RoPE per run)");
  if (c.keySummaries) return unsupported("tiers cannot be combined with keySummaries yet (sparse decode selects blocks of one size)");
  return Status::ok();
}

}  // namespace kvc
