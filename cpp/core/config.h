// The cache configuration as the core sees it, and its validation (the second, cheap
// check after the TypeScript layer's; it names the argument and what it expected).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kvc/formats.h"
#include "kvc/generated/schema.h"
#include "kvc/status.h"
#include "kvc/views.h"

namespace kvc {

// One precision tier (cache option tiers, cpp/core/tiers): the newest `rows` rows of a stream
// stay in tier 0; older whole blocks age into tier 1, and so on. The last tier has rows 0.
struct TierSpec {
  uint32_t rows = 0;
  Storage keys = Storage::kF16;
  Storage values = Storage::kF16;
};

struct CacheConfig {
  uint32_t layers = 0;
  uint32_t kvHeads = 0;
  uint32_t headDim = 0;
  uint32_t queryHeads = 0;
  uint32_t blockSize = schema::cache::kBlockSizeDefault;
  Storage keys = static_cast<Storage>(schema::cache::kKeysDefault);
  Storage values = static_cast<Storage>(schema::cache::kValuesDefault);
  uint32_t groupSize = 32;
  bool rotateKeys = false;
  bool rotateValues = false;
  uint32_t rotationSeed = schema::cache::kRotationSeedDefault;
  uint64_t maxBytes = schema::cache::kMaxBytesDefault;  // pool budget; 0 = min(physical memory, 8 GiB) (Cache::create)
  uint32_t threads = 0;   // 0 = hardware concurrency
  uint32_t queryReservoir = schema::cache::kQueryReservoirDefault;  // recorded query vectors kept per stream (uniform sample)
  uint32_t recentQueries = schema::cache::kRecentQueriesDefault;    // newest query vectors kept per stream
  std::string device = "cpu";  // "cpu" or "cuda"
  bool fastPrecision = false;  // precision 'fast': the default of every attention call
  bool keySummaries = false;   // per-block key summaries for sparse decode (formats.h)
  // Low-rank storage (cpp/core/lowrank.cpp): ranks of the key and value bases, 0 = off. Key
  // rows are stored as storedDim() coefficients, value rows as valueStoredDim(); a value rank
  // of headDim stores values unprojected (no value basis); the rest of the cache sees headDim.
  uint32_t lowRankKeys = 0;
  uint32_t lowRankValues = 0;
  uint32_t calibrationRows = schema::lowRank::kCalibrationRowsDefault;

  // RoPE applied by the cache (ropeDims > 0): keys are stored before RoPE and attention
  // rotates queries and keys by position. 0 = keys arrive after RoPE (the default).
  uint32_t ropeDims = 0;
  double ropeTheta = 0.0;
  uint32_t ropeStyle = 0;  // index in schema::kRopeStyleNames

  // Precision tiers (empty: every block has the format keys/values). With tiers, keys and
  // values equal tiers[0]'s formats (the top tier, where rows are appended).
  std::vector<TierSpec> tiers;
  bool tiered() const { return !tiers.empty(); }

  RopeSpec rope() const { return RopeSpec{ropeTheta, ropeDims, ropeStyle, false}; }

  uint32_t queriesPerHead() const { return queryHeads / kvHeads; }
  uint32_t streamsPerSequence() const { return layers * kvHeads; }
  bool lowRank() const { return lowRankKeys != 0; }
  // Floats per stored row: the coefficients of a low-rank cache, else headDim.
  uint32_t storedDim() const { return lowRank() ? lowRankKeys : headDim; }
  uint32_t valueStoredDim() const { return lowRank() ? lowRankValues : headDim; }
  // Values kept in the original space (value rank == headDim): no value basis.
  bool fullValues() const { return lowRank() && lowRankValues == headDim; }
  // Low-rank attention computed on the host over lifted rows (cpp/core/lowrank_host.cpp):
  // RoPE by position does not commute with the projection (unless the backend lifts keys
  // itself, Backend::attendsLiftedKeys), and the block kernels of a backend without
  // Backend::attendsValueDim read key and value rows of one width.
  bool hostLowRank(bool backendAttendsValueDim, bool backendLiftsKeys = false) const {
    return lowRank() && ((ropeDims != 0 && !(backendLiftsKeys && backendAttendsValueDim)) ||
                         (lowRankValues != lowRankKeys && !backendAttendsValueDim));
  }
  uint32_t keyRowBytes() const { return rowBytes(keys, storedDim(), groupSize); }
  uint32_t valueRowBytes() const { return rowBytes(values, valueStoredDim(), groupSize); }
  BlockLayout blockLayout() const {
    return makeBlockLayout(blockSize, keyRowBytes(), valueRowBytes(), keySummaries ? keySummaryBytes(storedDim()) : 0);
  }
};

// The schema's storage names must follow kvc::Storage, since the binding maps a name's index
// in schema::kStorageNames to the enum.
static_assert(schema::kStorageCount == kStorageCount, "schema/options.json storage names and kvc::Storage differ");

Status validateConfig(const CacheConfig& c);

}  // namespace kvc
