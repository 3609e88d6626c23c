// The keep-set rule of eviction (ARCHITECTURE §4.3), defined once: which rows are protected
// and how top-k breaks ties. The CPU backend's selectRows and the core's cross-head budget
// planner (Ada-KV) use this host code; a device backend reproduces the same rule (tests
// compare keep sets exactly). Host memory only.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

namespace kvc {

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
// forced in by the caller and not counted in k. Average O(n): each candidate becomes one
// 64-bit key (score key << 32 | ~index), so that one integer comparison applies the score
// order and the tie rule together, and nth_element partitions the k largest keys.
//   scores    [n]
//   selected  [n] in/out, 0 or 1
// Returns the number of rows it marked.
inline uint32_t selectTopK(const float* scores, uint32_t n, uint32_t k, uint8_t* selected,
                           std::vector<uint64_t>* scratch) {
  std::vector<uint64_t>& keys = *scratch;
  keys.clear();
  for (uint32_t i = 0; i < n; ++i) {
    if (!selected[i]) keys.push_back((static_cast<uint64_t>(orderedScoreKey(scores[i])) << 32) | (0xFFFFFFFFu - i));
  }
  if (k >= keys.size()) {
    for (uint64_t key : keys) selected[0xFFFFFFFFu - static_cast<uint32_t>(key)] = 1;
    return static_cast<uint32_t>(keys.size());
  }
  if (k == 0) return 0;
  std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint64_t>());
  for (uint32_t j = 0; j < k; ++j) selected[0xFFFFFFFFu - static_cast<uint32_t>(keys[j])] = 1;
  return k;
}

// Marks up to `limit` protected rows of a stream of n rows: the first `sinks` rows, then the
// newest of the last `recent` rows. Returns how many it marked.
//   selected  [n] in/out
inline uint32_t markProtectedRows(uint32_t n, uint32_t limit, uint32_t sinks, uint32_t recent, uint8_t* selected) {
  uint32_t marked = 0;
  const uint32_t s = std::min(sinks, n);
  for (uint32_t r = 0; r < s && marked < limit; ++r, ++marked) selected[r] = 1;
  const uint32_t rc = std::min(recent, n);
  for (uint32_t i = 0; i < rc && marked < limit; ++i) {
    const uint32_t r = n - 1 - i;
    if (!selected[r]) {
      selected[r] = 1;
      ++marked;
    }
  }
  return marked;
}

// One stream's keep set: the protected rows (up to `keep`) plus the best others, ascending.
//   scores  [n]
inline void selectKeepSet(const float* scores, uint32_t n, uint32_t keep, uint32_t sinks, uint32_t recent,
                          std::vector<int32_t>* rows, std::vector<uint8_t>* selected, std::vector<uint64_t>* scratch) {
  selected->assign(n, 0);
  const uint32_t forced = markProtectedRows(n, keep, sinks, recent, selected->data());
  selectTopK(scores, n, keep - forced, selected->data(), scratch);
  rows->clear();
  for (uint32_t r = 0; r < n; ++r) {
    if ((*selected)[r]) rows->push_back(static_cast<int32_t>(r));
  }
}

}  // namespace kvc
