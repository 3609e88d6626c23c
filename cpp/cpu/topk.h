// Linear-time top-k selection over float scores with a deterministic tie rule, the
// selection kernel of eviction (ARCHITECTURE §4.3). Host memory only; it decides which
// rows stay, the backend's gather moves them.
#pragma once
#include <cstdint>
#include <vector>

namespace kvc::cpu {

// A 32-bit key that orders like the float: a larger key is a higher score. NaN orders
// below -inf, so a NaN score is never preferred to a number.
inline uint32_t orderedScoreKey(float score) {
  uint32_t bits;
  static_assert(sizeof(bits) == sizeof(score), "float is 32 bits");
  __builtin_memcpy(&bits, &score, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0;  // NaN
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Among the rows i in [0, n) with selected[i] == 0, marks (selected[i] = 1) the min(k, that
// many) with the highest scores; equal scores: the lower index wins. Rows already marked are
// forced in by the caller and not counted in k. Average O(n) (nth_element on packed keys).
//   scores    [n]
//   selected  [n] in/out, 0 or 1
// Returns the number of rows it marked.
uint32_t selectTopK(const float* scores, uint32_t n, uint32_t k, uint8_t* selected, std::vector<uint64_t>* scratch);

}  // namespace kvc::cpu
