// Import of a plain sequence from its chunk payloads as they arrive (the PrefixStore's chunk
// entries: each holds the export prelude, then per stream the keys | values | beta | positions
// of a run of rows; docs/kvc-format.md). The blocks of the whole sequence are taken at begin;
// each chunk is checked (the CRC-32 of the entry frame around it, every row as importSequence
// checks rows) and written to its blocks in one pass over its bytes; the sequence appears in
// the cache only at finish, after every chunk passed. A failed or abandoned import gives its
// blocks back: the cache is left as it was.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cache.h"

namespace kvc {

class ChunkImport {
 public:
  explicit ChunkImport(Cache& cache) : cache_(&cache) {}
  // Gives the blocks back unless finished or forgotten (the cache must still be alive).
  ~ChunkImport();
  ChunkImport(const ChunkImport&) = delete;
  ChunkImport& operator=(const ChunkImport&) = delete;

  // prelude: the export bytes before the tables (magic through the low-rank rank of versions
  // 1-3) every chunk starts with; rows[j]: rows per stream of chunk j (chunk j's rows follow
  // those of chunks 0..j-1). Takes every block now (all or nothing).
  Status begin(const uint8_t* prelude, size_t preludeBytes, const uint32_t* rows, uint32_t chunks);
  // Chunk j, whose payload starts at frame + payloadAt and ends 4 bytes before frame +
  // frameBytes, where the CRC-32 of frame[0, frameBytes - 4) is stored (little-endian). Any
  // failure (CORRUPT_DATA for damaged bytes) fails the whole import and gives the blocks back.
  Status add(uint32_t chunk, const uint8_t* frame, size_t frameBytes, size_t payloadAt);
  // The sequence, once every chunk was added; its id in *id.
  Status finish(uint64_t* id);
  // Drops the blocks without giving them back: the cache they came from is gone.
  void forget() { blocks_.clear(); }

 private:
  void release();
  Status fail(Status status);

  Cache* cache_;
  std::vector<uint8_t> prelude_;
  std::vector<uint32_t> rows_, starts_;
  std::vector<bool> added_;
  std::vector<int32_t> blocks_;  // [stream][blocksPerStream_]
  uint32_t total_ = 0, blocksPerStream_ = 0;
  bool begun_ = false, failed_ = false, finished_ = false;
  std::vector<float> beta_;
  std::vector<int32_t> positions_;
};

// Defined in serialize.cpp: the prelude of a chunk of a plain export (versions 1-3, no
// low-rank section) against this cache's configuration, as importSequence checks a header.
Status checkPlainPrelude(const CacheConfig& c, const uint8_t* prelude, size_t preludeBytes);

}  // namespace kvc
