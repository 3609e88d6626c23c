// Row scores of eviction policies (higher = keep), computed on the host from what the
// core holds: accumulated attention mass, recorded queries, and keys dequantized by the
// backend's readRows. Scores never change the cache.
#pragma once
#include <cstdint>
#include <vector>

#include "../cache.h"
#include "policy.h"

namespace kvc {

// Scores of stream (layer, head); p.given (kGiven) is read from `givenOffset` on.
//   out  [length]
Status scoreStream(Cache& cache, const Sequence& seq, uint32_t layer, uint32_t head, const PolicySpec& p,
                   uint64_t givenOffset, std::vector<float>* out);

// Scores of every stream of the sequence (out[layer * kvHeads + head], each [length]);
// streams are scored in parallel (up to config.threads) where the policy does arithmetic.
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
