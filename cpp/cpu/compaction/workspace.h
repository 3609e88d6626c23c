// The scratch memory of compaction, owned by one cache's backend (the model is FlashInfer's
// caller-owned workspace): no process-wide buffers, every byte is counted, and it all goes
// away with the backend (dispose). Compaction allocates tens of MB of temporaries per
// stream, and fresh allocations cost a page fault per 4 KiB on first touch (a third of the
// run time without reuse), so sets of buffers are kept between streams and calls.
//
// A ScratchLease binds one set of the workspace to the calling thread for one stream;
// scratch<T>() then draws from that set. Contents are uninitialized on every request.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace kvc::compaction {

enum class Scratch : uint32_t {
  kAttendBlocks, kAttendColumns, kExps, kLogits, kMass, kMassFree, kSoftmaxFree,
  kPackedGram, kGramLower, kGram, kFactor, kPackedRhs, kRhs,
  kPackedKeys, kPackedValues, kPackedKeptKeys, kPackedKeptValues, kQueries, kPackedQueries, kHeldOut,
  kKeptKeys, kProtSoftmax, kProtValues, kProtContrib, kFitRhs, kFitSolution, kCount
};

class Workspace;

// One set of buffers, one per Scratch slot, used by one thread at a time.
class ScratchSet {
 public:
  explicit ScratchSet(Workspace* owner) : owner_(owner) {}
  ~ScratchSet() { release(); }
  ScratchSet(const ScratchSet&) = delete;
  ScratchSet& operator=(const ScratchSet&) = delete;
  // At least `bytes` bytes, 64-byte aligned; throws std::bad_alloc.
  void* bytes(Scratch slot, size_t bytes);
  size_t held() const;
  void release();

 private:
  Workspace* owner_;
  void* data_[static_cast<size_t>(Scratch::kCount)] = {};
  size_t size_[static_cast<size_t>(Scratch::kCount)] = {};
};

class Workspace {
 public:
  Workspace();
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // A set for one stream (an idle one when there is one); give it back with put().
  std::unique_ptr<ScratchSet> take();
  void put(std::unique_ptr<ScratchSet> set);
  // Bytes held: idle and leased sets plus what others account here (the backend's input
  // buffers). Safe from any thread.
  uint64_t bytes() const { return static_cast<uint64_t>(bytes_.load(std::memory_order_relaxed)); }
  void account(int64_t delta) { bytes_.fetch_add(delta, std::memory_order_relaxed); }
  // Frees the idle sets.
  void trim();

 private:
  // At most this many idle sets are kept; more exist only while that many streams run at once.
  static constexpr size_t kMaxIdle = 8;
  std::mutex mutex_;
  std::vector<std::unique_ptr<ScratchSet>> idle_;
  std::atomic<int64_t> bytes_{0};
};

// Binds a set of `workspace` to the calling thread until destroyed (nests: the previous
// binding comes back).
class ScratchLease {
 public:
  explicit ScratchLease(Workspace& workspace);
  ~ScratchLease();
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

 private:
  Workspace& workspace_;
  std::unique_ptr<ScratchSet> set_;
  ScratchSet* previous_;
};

// A buffer of at least `count` elements of T (T trivially constructible) from the set bound
// to this thread, valid until the next request of the same slot on this thread. Throws
// std::bad_alloc, also when no set is bound (a programming error, reported as OUT_OF_MEMORY
// rather than a crash).
void* scratchBytes(Scratch slot, size_t bytes);
template <class T>
T* scratch(Scratch slot, size_t count) {
  return static_cast<T*>(scratchBytes(slot, count * sizeof(T) + 64));
}

// Frees the bound set's buffers when together they exceed maxBytes (called after each
// stream, so that one huge stream does not pin its memory in the workspace).
void trimScratch(size_t maxBytes);

}  // namespace kvc::compaction
