// The fixed pseudo-random sign flips of the Hadamard rotation, derived from the seed in
// the cache config (so an exported sequence can be decoded by a cache with that seed).
#pragma once
#include <cstdint>
#include <vector>

namespace kvc {

// splitmix64: tiny, well-mixed, and identical on every platform.
inline uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// tensor: 0 for keys, 1 for values (independent signs).
inline std::vector<float> rotationSigns(uint32_t seed, uint32_t tensor, uint32_t headDim) {
  uint64_t state = (static_cast<uint64_t>(seed) << 1) ^ (tensor * 0xD1B54A32D192ED03ull);
  std::vector<float> signs(headDim);
  uint64_t bits = 0;
  for (uint32_t i = 0; i < headDim; ++i) {
    if (i % 64 == 0) bits = splitmix64(&state);
    signs[i] = (bits >> (i % 64)) & 1 ? -1.0f : 1.0f;
  }
  return signs;
}

}  // namespace kvc
