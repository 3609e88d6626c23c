// See topk.h. Each candidate becomes one 64-bit key (score key << 32 | ~index), so that
// one integer comparison applies the score order and the tie rule together, and
// nth_element partitions the k largest keys in average linear time.
#include "topk.h"

#include <algorithm>
#include <functional>

namespace kvc::cpu {

uint32_t selectTopK(const float* scores, uint32_t n, uint32_t k, uint8_t* selected, std::vector<uint64_t>* scratch) {
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

}  // namespace kvc::cpu
