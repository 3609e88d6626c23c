// A sequence: for every (layer, kv head) a stream with its own block table and length
// (ARCHITECTURE §2), plus the next default position per layer. Plain data; the Cache
// does every mutation so that the block pool's reference counts stay right.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace kvc {

// Queries seen by attention with recordQueries, per stream (all query heads of the GQA
// group pooled), in the original (unrotated) space:
// - reservoir: a uniform sample of every recorded query vector (Algorithm R), capacity
//   CacheConfig::queryReservoir, the default reference queries of compaction;
// - recent: a ring of the newest CacheConfig::recentQueries vectors (SnapKV's observation
//   window, TOVA's last query).
struct QueryLog {
  std::vector<float> reservoir;  // [min(seen, capacity)][headDim]
  uint64_t seen = 0;
  std::vector<float> recent;     // ring [min(recentSeen, capacity)][headDim]
  uint64_t recentSeen = 0;
};

// The bases of a low-rank stream (cpp/core/lowrank.cpp): [headDim][rank] each, orthonormal
// columns. Immutable once made, so forks share them.
struct LowRankBasis {
  std::vector<float> keys;
  std::vector<float> values;
};

struct Stream {
  std::vector<int32_t> blocks;  // block ids, ceil(length / blockSize) of them
  int32_t length = 0;           // rows in blocks
  std::vector<float> scores;    // accumulated attention mass per row; empty until used
  QueryLog queries;             // low-rank streams with a basis: projected (lowrank.cpp)
  // Low-rank caches only. Without a basis the stream is calibrating: its rows are held here
  // at full precision ([n][headDim], in order) and it has no blocks; with a basis these
  // are empty and the blocks hold coefficient rows.
  std::shared_ptr<const LowRankBasis> basis;
  std::vector<float> pendingKeys, pendingValues;
  std::vector<int32_t> pendingPositions;

  // Precision tiers (cpp/core/tiers): blocks per aged tier, [tier] for tiers 1.. (index 0
  // unused); empty until a block ages. The block table runs from the lowest tier to tier 0.
  std::vector<uint32_t> tierBlocks;

  int32_t pendingRows() const { return static_cast<int32_t>(pendingPositions.size()); }
  // Rows the stream holds, wherever they are.
  int32_t rows() const { return length + pendingRows(); }
};

struct Sequence {
  uint64_t id = 0;
  std::vector<Stream> streams;         // [layer * kvHeads + kvHead]
  std::vector<int32_t> nextPosition;   // [layer]
  bool busy = false;                   // an asynchronous operation holds it
  // Background maintenance (replace_prefix.cpp). On a sequence that has a snapshot: rows
  // [0, intact[s]) of stream s are unchanged since the snapshot was taken (truncate lowers
  // it, a rebuild by keepRows zeroes it); empty when no snapshot is outstanding.
  std::vector<int32_t> intact;
  // On a snapshot: the sequence it was taken of and that sequence's rows per stream then.
  uint64_t snapshotOf = 0;
  std::vector<int32_t> snapshotRows;

  Stream& stream(uint32_t layer, uint32_t kvHeads, uint32_t head) { return streams[layer * kvHeads + head]; }
  const Stream& stream(uint32_t layer, uint32_t kvHeads, uint32_t head) const { return streams[layer * kvHeads + head]; }
};

}  // namespace kvc
