// Per-thread scratch buffers that survive between calls: compaction allocates tens of MB of
// temporaries per stream, and fresh allocations cost a page fault per 4 KiB on first touch
// (a third of the run time before this cache). Contents are uninitialized on every request.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace kvc::compaction {

enum class Scratch : uint32_t {
  kAttendBlocks, kAttendColumns, kExps, kLogits, kMass, kMassFree, kSoftmaxFree,
  kPackedGram, kGramLower, kGram, kFactor, kPackedRhs, kRhs,
  kPackedKeys, kPackedValues, kPackedKeptKeys, kPackedKeptValues, kQueries, kPackedQueries, kHeldOut, kCount
};

// A buffer of at least `count` elements of T (T trivially constructible), valid until the
// next request of the same slot on this thread.
void* scratchBytes(Scratch slot, size_t bytes);
template <class T>
T* scratch(Scratch slot, size_t count) {
  return static_cast<T*>(scratchBytes(slot, count * sizeof(T) + 64));
}
// Frees this thread's buffers when together they exceed maxBytes (called after each stream,
// so that one huge stream does not pin its memory for the life of the thread).
void trimScratch(size_t maxBytes);

}  // namespace kvc::compaction
