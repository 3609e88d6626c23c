// Block pool bookkeeping: which block ids are free, and how many owners each used block
// has (fork shares blocks; copy-on-write needs the count). The memory itself belongs to
// the backend; this class only hands out ids below a capacity fixed by maxBytes.
#pragma once
#include <cstdint>
#include <vector>

#include "kvc/status.h"

namespace kvc {

class BlockPool {
 public:
  explicit BlockPool(uint64_t capacityBlocks) : capacity_(capacityBlocks) {}

  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_; }
  uint64_t available() const { return capacity_ - used_; }
  // Highest block id ever handed out + 1: the backend must have committed this many.
  uint64_t highWater() const { return refCounts_.size(); }

  // Ids for `count` new blocks with reference count 1, reusing freed ids first (lowest
  // first, so a freshly filled cache keeps its blocks close together). All or nothing.
  Status allocate(uint32_t count, std::vector<int32_t>* out);
  // What highWater() would be after allocate(count), without allocating.
  uint64_t highWaterAfter(uint32_t count) const;

  void retain(int32_t id) { ++refCounts_[id]; }
  // Drops one reference; the block returns to the free list when none are left.
  void release(int32_t id);
  uint32_t refCount(int32_t id) const { return refCounts_[id]; }

 private:
  uint64_t capacity_;
  uint64_t used_ = 0;
  std::vector<uint32_t> refCounts_;  // indexed by block id; 0 = free
  std::vector<int32_t> freeList_;    // min-heap of free ids
};

}  // namespace kvc
