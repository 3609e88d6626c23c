// A sequence: for every (layer, kv head) a stream with its own block table and length
// (ARCHITECTURE §2), plus the next default position per layer. Plain data; the Cache
// does every mutation so that the block pool's reference counts stay right.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvc/half.h"

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
  // Caches with rope (keys and queries before RoPE): the stored position of each logged
  // vector's query token (the row the query sits at), slot for slot with reservoir / recent;
  // compaction rotates a logged query by it (compaction/rope_stage.h). Empty without rope.
  std::vector<int32_t> reservoirPositions;
  std::vector<int32_t> recentPositions;
};

// The bases of a low-rank stream (cpp/core/lowrank.cpp): [headDim][rank] each, orthonormal
// columns. Immutable once made, so forks share them.
struct LowRankBasis {
  std::vector<float> keys;
  std::vector<float> values;
};

// The rows a calibrating low-rank stream holds off the pool ([n][headDim] keys and values, in
// order), until its bases are fitted: binary16 (half the bytes of f32: what a stream costs
// before its fit is calibrationRows x headDim x 2 x 2 bytes), or f32 in a cache that stores
// f32 rows, after a row beyond the binary16 range, and for rows imported from an export whose
// held rows are not all binary16 values (exports of caches that held f32 rows; kept exact).
struct HeldRows {
  std::vector<uint16_t> keys16, values16;
  std::vector<float> keys32, values32;
  bool f32 = false;  // the rows are keys32 / values32

  bool wide() const { return f32; }
  uint64_t bytes() const { return 2ull * (keys16.size() + values16.size()) + 4ull * (keys32.size() + values32.size()); }
  void clear() {
    keys16.clear(), values16.clear(), keys32.clear(), values32.clear();
    keys16.shrink_to_fit(), values16.shrink_to_fit(), keys32.shrink_to_fit(), values32.shrink_to_fit();
    f32 = false;
  }
  // Keeps the first `rows` rows.
  void truncate(size_t rows, uint32_t headDim) {
    const size_t n = rows * headDim;
    if (f32) {
      keys32.resize(std::min(n, keys32.size())), values32.resize(std::min(n, values32.size()));
    } else {
      keys16.resize(std::min(n, keys16.size())), values16.resize(std::min(n, values16.size()));
    }
  }
  // Whether a row can be held as binary16 values: every element within its finite range.
  static bool fitsHalf(const float* x, uint32_t headDim) {
    for (uint32_t d = 0; d < headDim; ++d) {
      if (!(x[d] >= -65504.0f && x[d] <= 65504.0f)) return false;
    }
    return true;
  }
  // Turns binary16 rows into f32 rows (exactly).
  void widen(uint32_t headDim) {
    if (f32) return;
    keys32.resize(keys16.size()), values32.resize(values16.size());
    read(keys16.size() / headDim, headDim, keys32.data(), values32.data());
    keys16.clear(), values16.clear(), keys16.shrink_to_fit(), values16.shrink_to_fit();
    f32 = true;
  }
  // Appends one row of each (headDim floats), rounded to binary16 unless the rows are f32; a
  // row beyond the binary16 range turns the rows into f32 rather than being clipped.
  void append(const float* key, const float* value, uint32_t headDim) {
    if (!f32 && !(fitsHalf(key, headDim) && fitsHalf(value, headDim))) widen(headDim);
    if (f32) {
      keys32.insert(keys32.end(), key, key + headDim);
      values32.insert(values32.end(), value, value + headDim);
      return;
    }
    for (uint32_t d = 0; d < headDim; ++d) keys16.push_back(floatToHalf(key[d]));
    for (uint32_t d = 0; d < headDim; ++d) values16.push_back(floatToHalf(value[d]));
  }
  // Rows [0, n) as f32 into keys and values ([n][headDim] each; either may be null).
  void read(size_t n, uint32_t headDim, float* keys, float* values) const {
    const size_t count = n * headDim;
    if (f32) {
      if (keys) std::copy(keys32.begin(), keys32.begin() + static_cast<std::ptrdiff_t>(count), keys);
      if (values) std::copy(values32.begin(), values32.begin() + static_cast<std::ptrdiff_t>(count), values);
      return;
    }
    for (size_t i = 0; keys && i < count; ++i) keys[i] = halfToFloat(keys16[i]);
    for (size_t i = 0; values && i < count; ++i) values[i] = halfToFloat(values16[i]);
  }
};

struct Stream {
  std::vector<int32_t> blocks;  // block ids, ceil(length / blockSize) of them
  int32_t length = 0;           // rows in blocks
  std::vector<float> scores;    // accumulated attention mass per row; empty until used
  QueryLog queries;             // low-rank streams with a basis: projected (lowrank.cpp)
  // Low-rank caches only. Without a basis the stream is calibrating: its rows are held here
  // (HeldRows, binary16) and it has no blocks; with a basis these are empty and the blocks
  // hold coefficient rows.
  std::shared_ptr<const LowRankBasis> basis;
  HeldRows held;
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
