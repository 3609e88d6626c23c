// See pool_memory.h. POSIX: mmap(PROT_NONE) reservation + mprotect commits; elsewhere a
// plain allocation of the whole budget at the first commit.
#include "pool_memory.h"

#include <cstdlib>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define KVC_POSIX_MEMORY 1
#endif

namespace kvc::cpu {

namespace {
constexpr uint64_t kCommitChunk = uint64_t{2} << 20;  // 2 MiB: one huge page, few syscalls
}

PoolMemory::~PoolMemory() {
#ifdef KVC_POSIX_MEMORY
  if (base_) munmap(base_, reserved_);
#else
  std::free(base_);
#endif
}

Status PoolMemory::reserve(uint64_t bytes) {
  reserved_ = (bytes + kCommitChunk - 1) / kCommitChunk * kCommitChunk;
  if (reserved_ == 0) reserved_ = kCommitChunk;
#ifdef KVC_POSIX_MEMORY
  void* p = mmap(nullptr, reserved_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    reserved_ = 0;
    return outOfMemory("cannot reserve " + std::to_string(bytes) + " bytes of address space for the block pool");
  }
  base_ = static_cast<uint8_t*>(p);
#ifdef MADV_HUGEPAGE
  madvise(base_, reserved_, MADV_HUGEPAGE);  // fewer TLB misses when attention streams the pool
#endif
#endif
  return Status::ok();
}

Status PoolMemory::commit(uint64_t bytes) {
  if (bytes <= committed_) return Status::ok();
  if (bytes > reserved_) return outOfMemory("block pool budget exceeded");
  uint64_t target = (bytes + kCommitChunk - 1) / kCommitChunk * kCommitChunk;
  if (target > reserved_) target = reserved_;
#ifdef KVC_POSIX_MEMORY
  if (mprotect(base_ + committed_, target - committed_, PROT_READ | PROT_WRITE) != 0) {
    return outOfMemory("the system refused " + std::to_string(target - committed_) + " more bytes for the block pool");
  }
#else
  if (!base_) {
    base_ = static_cast<uint8_t*>(std::calloc(1, reserved_));
    if (!base_) return outOfMemory("cannot allocate the block pool");
  }
#endif
  committed_ = target;
  return Status::ok();
}

}  // namespace kvc::cpu
