// See workspace.h.
#include "workspace.h"

#include <cstdlib>
#include <new>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define KVC_MAPPED_SCRATCH 1
#endif

namespace kvc::compaction {

namespace {
// Buffers of at least this size are mapped pages of their own rather than malloc'ed. They
// are freed to the system when released (trim, dispose): in the malloc heap, buffers of
// several MB that grow and are freed on whichever thread ran the compaction fragment the
// heaps and arenas, which then keep the memory of disposed caches resident (tens of MB after
// a few dozen caches). Smaller ones stay in malloc, where they are cheap. Page-aligned, so
// 64-byte aligned as the vector kernels need.
constexpr size_t kMapBytes = size_t{256} << 10;
constexpr size_t kPage = 4096;

size_t roundedSize(size_t bytes) {
  return bytes >= kMapBytes ? (bytes + kPage - 1) / kPage * kPage : (bytes + 63) / 64 * 64;
}

void* allocate(size_t rounded) {
#ifdef KVC_MAPPED_SCRATCH
  if (rounded >= kMapBytes) {
    void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
#endif
  return std::aligned_alloc(64, rounded);
}

void deallocate(void* p, size_t rounded) {
  if (!p) return;
#ifdef KVC_MAPPED_SCRATCH
  if (rounded >= kMapBytes) {
    munmap(p, rounded);
    return;
  }
#endif
  std::free(p);
}

// The set bound to this thread by a ScratchLease: a binding, not a buffer (the memory
// belongs to a workspace).
thread_local ScratchSet* bound = nullptr;
}  // namespace

void* ScratchSet::bytes(Scratch slot, size_t bytes) {
  const size_t i = static_cast<size_t>(slot);
  if (size_[i] < bytes) {
    deallocate(data_[i], size_[i]);
    if (owner_) owner_->account(-static_cast<int64_t>(size_[i]));
    data_[i] = nullptr;
    size_[i] = 0;
    // 64-byte alignment: rows handed to the vector kernels start on a cache line.
    const size_t rounded = roundedSize(bytes);
    void* p = allocate(rounded);
    if (!p) throw std::bad_alloc();
    data_[i] = p;
    size_[i] = rounded;
    if (owner_) owner_->account(static_cast<int64_t>(rounded));
  }
  return data_[i];
}

size_t ScratchSet::held() const {
  size_t total = 0;
  for (size_t s : size_) total += s;
  return total;
}

void ScratchSet::release() {
  for (size_t i = 0; i < static_cast<size_t>(Scratch::kCount); ++i) {
    deallocate(data_[i], size_[i]);
    if (owner_) owner_->account(-static_cast<int64_t>(size_[i]));
    data_[i] = nullptr;
    size_[i] = 0;
  }
}

Workspace::Workspace() { idle_.reserve(kMaxIdle); }

Workspace::~Workspace() {
  // Sets still leased would outlive their owner: the backend waits for its compactions
  // before it is destroyed (Cache::~Cache), so there are none.
  idle_.clear();
}

std::unique_ptr<ScratchSet> Workspace::take() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_.empty()) {
      std::unique_ptr<ScratchSet> s = std::move(idle_.back());
      idle_.pop_back();
      return s;
    }
  }
  return std::make_unique<ScratchSet>(this);
}

void Workspace::put(std::unique_ptr<ScratchSet> set) {
  if (!set) return;
  std::lock_guard<std::mutex> lock(mutex_);
  // Reserved in the constructor: keeping a set never allocates.
  if (idle_.size() < kMaxIdle) idle_.push_back(std::move(set));
}

void Workspace::trim() {
  std::lock_guard<std::mutex> lock(mutex_);
  idle_.clear();  // frees the sets and keeps the reserved capacity
}

ScratchLease::ScratchLease(Workspace& workspace) : workspace_(workspace), set_(workspace.take()), previous_(bound) {
  bound = set_.get();
}

ScratchLease::~ScratchLease() {
  bound = previous_;
  workspace_.put(std::move(set_));
}

void* scratchBytes(Scratch slot, size_t bytes) {
  if (!bound) throw std::bad_alloc();
  return bound->bytes(slot, bytes);
}

void trimScratch(size_t maxBytes) {
  if (bound && bound->held() > maxBytes) bound->release();
}

}  // namespace kvc::compaction
