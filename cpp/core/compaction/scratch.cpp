// See scratch.h.
#include "scratch.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace kvc::compaction {

namespace {

struct Buffers {
  void* data[static_cast<size_t>(Scratch::kCount)] = {};
  size_t size[static_cast<size_t>(Scratch::kCount)] = {};
  void release() {
    for (size_t i = 0; i < static_cast<size_t>(Scratch::kCount); ++i) {
      std::free(data[i]);
      data[i] = nullptr;
      size[i] = 0;
    }
  }
  ~Buffers() { release(); }
};

// Idle sets. At most kMaxIdle are kept; more only exist while that many streams run at once.
constexpr size_t kMaxIdle = 8;
std::mutex idleMutex;
std::vector<Buffers*>& idleSets() {
  // Never destroyed (no exit-order issues); reserved so that returning a set never allocates.
  static std::vector<Buffers*>* sets = [] {
    auto* v = new std::vector<Buffers*>();
    v->reserve(kMaxIdle);
    return v;
  }();
  return *sets;
}

thread_local Buffers ownBuffers;
thread_local Buffers* current = nullptr;

Buffers& buffers() { return current ? *current : ownBuffers; }

}  // namespace

ScratchLease::ScratchLease() : previous_(current), set_(nullptr) {
  Buffers* b = nullptr;
  {
    std::lock_guard<std::mutex> lock(idleMutex);
    auto& idle = idleSets();
    if (!idle.empty()) {
      b = idle.back();
      idle.pop_back();
    }
  }
  if (!b) b = new Buffers();
  set_ = b;
  current = b;
}

ScratchLease::~ScratchLease() {
  Buffers* b = static_cast<Buffers*>(set_);
  current = static_cast<Buffers*>(previous_);
  {
    std::lock_guard<std::mutex> lock(idleMutex);
    auto& idle = idleSets();
    if (idle.size() < kMaxIdle) {
      idle.push_back(b);
      b = nullptr;
    }
  }
  delete b;
}

void* scratchBytes(Scratch slot, size_t bytes) {
  Buffers& bufs = buffers();
  const size_t i = static_cast<size_t>(slot);
  if (bufs.size[i] < bytes) {
    std::free(bufs.data[i]);
    bufs.data[i] = nullptr;
    bufs.size[i] = 0;
    // 64-byte alignment: rows handed to the vector kernels start on a cache line.
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    bufs.data[i] = p;
    bufs.size[i] = rounded;
  }
  return bufs.data[i];
}

void trimScratch(size_t maxBytes) {
  Buffers& bufs = buffers();
  size_t total = 0;
  for (size_t s : bufs.size) total += s;
  if (total <= maxBytes) return;
  bufs.release();
}

}  // namespace kvc::compaction
