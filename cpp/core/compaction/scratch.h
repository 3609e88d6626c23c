// Scratch buffers that survive between calls: compaction allocates tens of MB of temporaries
// per stream, and fresh allocations cost a page fault per 4 KiB on first touch (a third of
// the run time before this cache, more under virtualization). Contents are uninitialized on
// every request. A ScratchLease binds one set of buffers to the calling thread for the
// duration of one stream; sets go back to a process-wide free list afterwards, so that calls
// that land on different threads (the addon's worker threads) still reuse warm memory.
// Without a lease, a thread uses its own thread-local set.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace kvc::compaction {

enum class Scratch : uint32_t {
  kAttendBlocks, kAttendColumns, kExps, kLogits, kMass, kMassFree, kSoftmaxFree,
  kPackedGram, kGramLower, kGram, kFactor, kPackedRhs, kRhs,
  kPackedKeys, kPackedValues, kPackedKeptKeys, kPackedKeptValues, kQueries, kPackedQueries, kHeldOut,
  kKeptKeys, kProtSoftmax, kProtValues, kProtContrib, kFitRhs, kFitSolution, kCount
};

// A buffer of at least `count` elements of T (T trivially constructible), valid until the
// next request of the same slot on this thread.
void* scratchBytes(Scratch slot, size_t bytes);
template <class T>
T* scratch(Scratch slot, size_t count) {
  return static_cast<T*>(scratchBytes(slot, count * sizeof(T) + 64));
}
class ScratchLease {
 public:
  ScratchLease();
  ~ScratchLease();
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

 private:
  void* previous_;
  void* set_;
};

// Frees the current set's buffers when together they exceed maxBytes (called after each stream,
// so that one huge stream does not pin its memory for the life of the thread).
void trimScratch(size_t maxBytes);

}  // namespace kvc::compaction
