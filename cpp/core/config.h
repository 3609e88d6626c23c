// The cache configuration as the core sees it, and its validation (the second, cheap
// check after the TypeScript layer's; it names the argument and what it expected).
#pragma once
#include <cstdint>
#include <string>

#include "kvc/formats.h"
#include "kvc/generated/schema.h"
#include "kvc/status.h"

namespace kvc {

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

  uint32_t queriesPerHead() const { return queryHeads / kvHeads; }
  uint32_t streamsPerSequence() const { return layers * kvHeads; }
  uint32_t keyRowBytes() const { return rowBytes(keys, headDim, groupSize); }
  uint32_t valueRowBytes() const { return rowBytes(values, headDim, groupSize); }
  BlockLayout blockLayout() const {
    return makeBlockLayout(blockSize, keyRowBytes(), valueRowBytes(), keySummaries ? keySummaryBytes(headDim) : 0);
  }
};

// The schema's storage names must follow kvc::Storage, since the binding maps a name's index
// in schema::kStorageNames to the enum.
static_assert(schema::kStorageCount == kStorageCount, "schema/options.json storage names and kvc::Storage differ");

Status validateConfig(const CacheConfig& c);

}  // namespace kvc
