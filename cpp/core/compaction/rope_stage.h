// Compaction of a cache with rope (keys stored before RoPE, ARCHITECTURE §9). Attention
// Matching fits the logits q . k that reference queries give the keys; with rope a query at
// position pq gives a key stored at pk the logit rot(q, pq) . rot(k, pk). A RopeStage makes
// that the problem every backend already solves: a private copy of the planned streams whose
// keys are the rotated rows (post-RoPE; a low-rank key lifted to headDim first) at their
// stored positions, in f32, with the stored values (low-rank values as their coefficients),
// beta and positions, in blocks of the cache's pool (so device backends read them where they
// live). The reference queries are rotated at their own positions (rotate). The
// backend's compactStreams then runs unchanged on the stage; apply keeps the kept rows'
// ORIGINAL stored (pre-RoPE) keys and positions, and writes the fitted beta and values.
//
// Positions: the fit uses stored positions, the default of attention. A stream attended with
// positions: 'rank' is re-indexed after compaction exactly as after eviction (row i has rank
// i), so its relative offsets change with every removed row, as they do for eviction.
#pragma once
#include <cstdint>
#include <vector>

#include "../sequence.h"
#include "kvc/status.h"
#include "kvc/views.h"

namespace kvc {

class Cache;

class RopeStage {
 public:
  RopeStage() = default;
  ~RopeStage() { reset(); }
  RopeStage(const RopeStage&) = delete;
  RopeStage& operator=(const RopeStage&) = delete;

  // Stages the streams marked in `streams` ([layer * kvHeads + head]); the others stay
  // empty. Main thread (allocates pool blocks). All or nothing. byRank: keys are rotated at
  // their rank in the stream (attention's positions: 'rank') instead of their stored
  // position; the staged rows still carry their stored positions.
  Status build(Cache& cache, const Sequence& seq, const std::vector<uint8_t>& streams, bool byRank = false);
  bool byRank() const { return byRank_; }
  // With byRank: stream i's stored positions, ascending, as read while staging (a query's
  // rank is found among them without reading the staged rows back); empty otherwise.
  const std::vector<int32_t>& sortedPositions(size_t i) const { return sortedPositions_[i]; }
  const Sequence& sequence() const { return seq_; }
  // The stage's blocks as the kernels see them: f32 keys [headDim], f32 values of the
  // cache's value width, in pool slots of the cache's blockBytes.
  PoolView pool() const;
  const RowCodec& codec() const { return codec_; }
  uint64_t blocks() const;
  // Rotates n vectors [n][headDim] in place (keys, or queries), vector i by RoPE at
  // positions[i / perPosition] (the query heads of a GQA group share their token's
  // position), in f32 from the level tables as the CPU attention does. Any thread.
  void rotate(float* x, uint32_t n, uint32_t perPosition, const int32_t* positions) const;
  // Returns the staged blocks to the pool (main thread).
  void reset();

 private:
  Cache* cache_ = nullptr;
  Sequence seq_;
  PoolView pool_;
  RowCodec codec_;
  RopeSpec spec_;
  bool byRank_ = false;
  std::vector<float> cos_, sin_;  // kvc/rope.h level tables in the cache's pair style
  std::vector<std::vector<int32_t>> sortedPositions_;  // per stream, byRank only
};

}  // namespace kvc
