// Block pool memory on the host: the whole budget is reserved as address space up front
// (so block b is always at base + b * blockBytes, as on the GPU) and committed in chunks
// as the pool grows, so an unused budget costs no memory.
#pragma once
#include <cstdint>

#include "kvc/status.h"

namespace kvc::cpu {

class PoolMemory {
 public:
  PoolMemory() = default;
  ~PoolMemory();
  PoolMemory(const PoolMemory&) = delete;
  PoolMemory& operator=(const PoolMemory&) = delete;

  Status reserve(uint64_t bytes);
  // Commits at least [0, bytes); OUT_OF_MEMORY (and no change) when the OS refuses.
  Status commit(uint64_t bytes);
  uint8_t* base() const { return base_; }
  uint64_t committed() const { return committed_; }

 private:
  uint8_t* base_ = nullptr;
  uint64_t reserved_ = 0;
  uint64_t committed_ = 0;
};

}  // namespace kvc::cpu
