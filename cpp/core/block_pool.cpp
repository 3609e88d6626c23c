// Free list + reference counts of the block pool (see block_pool.h).
#include "block_pool.h"

#include <algorithm>
#include <functional>

namespace kvc {

uint64_t BlockPool::highWaterAfter(uint32_t count) const {
  const uint64_t reused = std::min<uint64_t>(count, freeList_.size());
  return refCounts_.size() + (count - reused);
}

Status BlockPool::allocate(uint32_t count, std::vector<int32_t>* out) {
  if (count > available()) {
    return outOfMemory("block pool exhausted: " + std::to_string(count) + " blocks needed, " +
                       std::to_string(available()) + " free within maxBytes");
  }
  if (highWaterAfter(count) > static_cast<uint64_t>(INT32_MAX)) {
    return outOfMemory("block pool exceeds 2^31 blocks");
  }
  for (uint32_t i = 0; i < count; ++i) {
    int32_t id;
    if (!freeList_.empty()) {
      std::pop_heap(freeList_.begin(), freeList_.end(), std::greater<int32_t>());
      id = freeList_.back();
      freeList_.pop_back();
    } else {
      id = static_cast<int32_t>(refCounts_.size());
      refCounts_.push_back(0);
    }
    refCounts_[id] = 1;
    out->push_back(id);
  }
  used_ += count;
  return Status::ok();
}

void BlockPool::release(int32_t id) {
  if (--refCounts_[id] == 0) {
    --used_;
    freeList_.push_back(id);
    std::push_heap(freeList_.begin(), freeList_.end(), std::greater<int32_t>());
  }
}

}  // namespace kvc
