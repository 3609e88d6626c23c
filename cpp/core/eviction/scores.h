// Row scores of eviction policies (higher = keep). The core computes the scores that need no
// rows (recency, accumulated attention mass, random, caller-given); the ones that read keys
// (key norm, SnapKV, TOVA) are the backend's (Backend::rowScores / selectRows, where the keys
// live), given the recorded queries gathered here. Scores never change the cache.
#pragma once
#include <cstdint>
#include <vector>

#include <memory>

#include "../cache.h"
#include "../compaction/rope_stage.h"
#include "kvc/compaction_ops.h"
#include "policy.h"

namespace kvc {

// Score inputs of every stream of a sequence: kGiven inputs over host scores (row-free
// sources; they point into `host`, the stream's accumulated scores or the policy's given
// array), or key-based inputs with their queries. Fails, before any work, when a stream lacks
// what the policy needs (accumulated mass, recorded queries, enough given scores).
// The inputs are read from `pool` with `codec`: the cache's own, or, for SnapKV and TOVA on a
// cache with rope, those of `rope`, a staged copy of the streams with their keys rotated (see
// scores.cpp); row indices are the same in both.
struct ScoreInputs {
  std::vector<RowScoreInput> streams;      // [layers * kvHeads]
  std::vector<std::vector<float>> host;    // [layers * kvHeads] row-free scores computed here
  std::vector<std::vector<float>> queries; // [layers * kvHeads] kMeanAttention queries [u, headDim]
  std::vector<std::vector<int32_t>> queryPositions;  // [layers * kvHeads] with rope: [u] stored positions
  bool anyKeyBased = false;
  PoolView pool;
  RowCodec codec;
  std::unique_ptr<RopeStage> rope;
};
Status scoreInputs(Cache& cache, const Sequence& seq, const PolicySpec& p, ScoreInputs* out);

// Scores of stream (layer, head); p.given (kGiven) is read from `givenOffset` on.
//   out  [length]
Status scoreStream(Cache& cache, const Sequence& seq, uint32_t layer, uint32_t head, const PolicySpec& p,
                   uint64_t givenOffset, std::vector<float>* out);

// Scores of every stream of the sequence in host memory (out[layer * kvHeads + head], each
// [length]): what the cross-head budget planner (adaptive) needs.
Status scoreSequence(Cache& cache, const Sequence& seq, const PolicySpec& p, std::vector<std::vector<float>>* out);

// The hash behind ScoreSource::kRandom, in [0, 1) with 24 bits (exact in f32); written so
// that lib/ and the tests can reproduce it with Math.imul.
inline uint32_t evictionMix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}
inline float randomRowScore(uint32_t seed, uint32_t stream, uint32_t row) {
  const uint32_t s = evictionMix32(seed ^ evictionMix32(stream * 0x9E3779B1u + 0x85EBCA77u));
  const uint32_t h = evictionMix32(s ^ (row * 0xC2B2AE3Du + 0x27D4EB2Fu));
  return static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
}

}  // namespace kvc
