// See scratch.h.
#include "scratch.h"

#include <cstdlib>
#include <new>

namespace kvc::compaction {

namespace {

struct Buffers {
  void* data[static_cast<size_t>(Scratch::kCount)] = {};
  size_t size[static_cast<size_t>(Scratch::kCount)] = {};
  ~Buffers() {
    for (void* p : data) std::free(p);
  }
};

thread_local Buffers buffers;

}  // namespace

void* scratchBytes(Scratch slot, size_t bytes) {
  const size_t i = static_cast<size_t>(slot);
  if (buffers.size[i] < bytes) {
    std::free(buffers.data[i]);
    buffers.data[i] = nullptr;
    buffers.size[i] = 0;
    // 64-byte alignment: rows handed to the vector kernels start on a cache line.
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    buffers.data[i] = p;
    buffers.size[i] = rounded;
  }
  return buffers.data[i];
}

void trimScratch(size_t maxBytes) {
  size_t total = 0;
  for (size_t s : buffers.size) total += s;
  if (total <= maxBytes) return;
  for (size_t i = 0; i < static_cast<size_t>(Scratch::kCount); ++i) {
    std::free(buffers.data[i]);
    buffers.data[i] = nullptr;
    buffers.size[i] = 0;
  }
}

}  // namespace kvc::compaction
