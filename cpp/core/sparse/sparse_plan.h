// Dynamic sparse decode (Quest-style, ARCHITECTURE §8-9) as a layer above the attention
// kernels: per stream, the backend bounds every block's logits from the key summaries, this
// layer keeps the blocks with the highest bounds (the sink blocks and the recent window always),
// and hands the kernels a block table of the kept blocks only, which they attend to exactly.
// Attention mass lands in a scratch array over the kept rows and is added back to their rows.
#pragma once
#include <cstdint>
#include <vector>

#include "kvc/backend.h"

namespace kvc {

// tokens == 0: dense attention. Otherwise at most ceil(tokens / blockSize) blocks per stream
// are read (more only when the sinks and the recent window alone need more).
struct SparseSpec {
  uint32_t tokens = 0;
  uint32_t sinks = 0;   // rows from the start of the stream always read
  uint32_t recent = 0;  // newest rows always read (at least the tq query rows)
};

// The picked blocks (ascending indices into the stream's block table) of a stream of `blocks`
// blocks whose logits are bounded by bounds[blocks]; all of them when the budget covers them.
// Ties prefer the lower block index.
void selectSparseBlocks(const float* bounds, uint32_t blocks, int32_t length, uint32_t blockSize, const SparseSpec& spec,
                        uint32_t tq, std::vector<uint32_t>* picked);

class SparsePlanner {
 public:
  // Bounds every stream (one backend call), picks its blocks, and rewrites streams[i].kv and
  // streams[i].scores to the picked blocks and a scratch score array. With rope (keys stored
  // before RoPE, positions as stored) the streams' queryPositions are required.
  Status plan(Backend& backend, const PoolView& pool, const RowCodec& codec, AttentionStream* streams, uint32_t count,
              uint32_t queriesPerHead, uint32_t tq, uint64_t tokenStride, float scale, const SparseSpec& spec,
              const RopeSpec& rope);
  // After the attention call: adds the scratch attention mass to the streams' own rows.
  void finish();

  uint32_t streamCount() const { return static_cast<uint32_t>(plans_.size()); }
  const std::vector<uint32_t>& picked(uint32_t i) const { return plans_[i].picked; }
  const std::vector<float>& bounds(uint32_t i) const { return plans_[i].bounds; }

 private:
  struct Plan {
    std::vector<float> bounds;
    std::vector<uint32_t> picked;
    std::vector<int32_t> table;   // block ids of the picked blocks
    std::vector<float> scores;    // attention mass of the picked rows (scratch)
    float* ownScores = nullptr;   // the stream's score array, or nullptr
    bool sparse = false;          // false: every block picked, the stream is left as it was
  };
  std::vector<Plan> plans_;
  std::vector<BoundsStream> boundsStreams_;
  std::vector<float> rotatedQueries_;  // with rope: [streams][tq * queriesPerHead][headDim] at their positions
  uint32_t blockSize_ = 0;
};

}  // namespace kvc
