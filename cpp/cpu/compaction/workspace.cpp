// See workspace.h.
#include "workspace.h"

#include <cstdlib>
#include <new>

namespace kvc::compaction {

namespace {
// The set bound to this thread by a ScratchLease: a binding, not a buffer (the memory
// belongs to a workspace).
thread_local ScratchSet* bound = nullptr;
}  // namespace

void* ScratchSet::bytes(Scratch slot, size_t bytes) {
  const size_t i = static_cast<size_t>(slot);
  if (size_[i] < bytes) {
    std::free(data_[i]);
    if (owner_) owner_->account(-static_cast<int64_t>(size_[i]));
    data_[i] = nullptr;
    size_[i] = 0;
    // 64-byte alignment: rows handed to the vector kernels start on a cache line.
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
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
    std::free(data_[i]);
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
