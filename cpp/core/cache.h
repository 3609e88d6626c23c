// The cache: configuration, backend, block pool and the live sequences. Every operation
// validates cheaply, plans its block changes, and only then mutates, so that a failure
// (budget exhausted, bad shape) leaves the cache exactly as it was.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "block_pool.h"
#include "config.h"
#include "kvc/backend.h"
#include "sequence.h"

namespace kvc {

struct AppendInput {
  uint32_t tokens = 0;                 // T
  InputType type = InputType::kF32;
  const void* keys = nullptr;          // [T, kvHeads, headDim]
  const void* values = nullptr;        // [T, kvHeads, headDim]
  const int32_t* positions = nullptr;  // [T] or nullptr for nextPosition, +1, ...
};

struct AttentionRequest {
  uint32_t layer = 0;
  uint32_t tq = 1;
  const float* queries = nullptr;  // [sequences, tq, queryHeads, headDim]
  float* out = nullptr;            // same shape
  float* lse = nullptr;            // [sequences, tq, queryHeads] or nullptr
  bool accumulateScores = false;   // add attention mass per row into Stream::scores
  bool recordQueries = false;      // log the queries into Stream::queries
};

// Rows to keep of one stream, ascending and unique.
struct KeepSet {
  uint32_t layer = 0;
  uint32_t head = 0;
  const int32_t* rows = nullptr;
  uint32_t count = 0;
};

struct RowsOut {
  std::vector<float> keys, values, beta;
  std::vector<int32_t> positions;
};

struct CacheStats {
  uint64_t sequences = 0;
  uint64_t rows = 0;
  uint64_t blocksUsed = 0;
  uint64_t blocksFree = 0;
  uint64_t blockBytes = 0;
  uint64_t committedBytes = 0;
  uint64_t maxBytes = 0;
  uint64_t workspaceBytes = 0;  // scratch memory the backend holds for compaction (and eviction)
};

class Cache {
 public:
  static Status create(const CacheConfig& config, std::unique_ptr<Backend> backend, std::unique_ptr<Cache>* out);
  ~Cache();

  const CacheConfig& config() const { return config_; }
  const Backend& backend() const { return *backend_; }
  PoolView pool() const { return PoolView{backend_->poolBase(), layout_}; }
  RowCodec codec() const;

  uint64_t createSequence();
  Status fork(uint64_t parent, uint64_t* child);
  Status freeSequence(uint64_t id);
  Status append(uint64_t id, uint32_t layer, const AppendInput& input);
  Status attention(const uint64_t* ids, uint32_t count, const AttentionRequest& request);
  Status truncate(uint64_t id, int32_t position);
  // Rebuilds streams from keep sets (eviction, compaction): rows move bit-exactly with their
  // beta, position and score; blocks no longer referenced return to the pool. All or nothing.
  Status keepRows(uint64_t id, const KeepSet* sets, uint32_t count);
  Status resetScores(uint64_t id);
  // Read-only access for policies and compaction (nullptr when freed).
  const Sequence* sequence(uint64_t id) const;
  Sequence* mutableSequence(uint64_t id);
  Backend& mutableBackend() { return *backend_; }
  Status read(uint64_t id, uint32_t layer, uint32_t head, RowsOut* out);
  Status lengths(uint64_t id, uint32_t layer, int32_t* out) const;
  Status nextPosition(uint64_t id, uint32_t layer, int32_t* out) const;
  Status exportSequence(uint64_t id, std::vector<uint8_t>* out);
  Status importSequence(const uint8_t* bytes, size_t size, uint64_t* id);
  bool hasSequence(uint64_t id) const { return sequences_.count(id) != 0; }
  CacheStats stats() const;

  // Work that reads this cache off the main thread (asynchronous compaction) enters before
  // it is queued and leaves when it no longer touches the cache. The destructor (dispose)
  // raises cancelRequested() and waits for every such work to leave, so no thread reads
  // freed pool memory; work checks the flag between batches, which bounds the wait.
  void enterBackground();
  void leaveBackground();
  bool cancelRequested() const { return cancelBackground_.load(std::memory_order_acquire); }
  const std::atomic<bool>* cancelFlag() const { return &cancelBackground_; }

 private:
  Cache(const CacheConfig& config, std::unique_ptr<Backend> backend, uint64_t capacityBlocks);
  Status find(uint64_t id, Sequence** out);
  Status findConst(uint64_t id, const Sequence** out) const;
  Status checkLayer(uint32_t layer) const;
  // Allocates `count` blocks, committing backend memory first; all or nothing.
  Status allocateBlocks(uint32_t count, std::vector<int32_t>* out);
  void releaseStream(Stream& stream);
  Status readPositions(const Stream& stream, uint32_t start, uint32_t count, int32_t* out) const;
  void recordQueries(Stream& stream, uint32_t streamIndex, const float* queries, uint32_t tq, uint64_t tokenStride);
  Status attentionChunk(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1);

  CacheConfig config_;
  BlockLayout layout_;
  std::unique_ptr<Backend> backend_;
  BlockPool pool_;
  std::vector<float> keySigns_, valueSigns_;  // Hadamard sign flips, empty when not rotated
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> sequences_;
  uint64_t nextSequenceId_ = 1;
  std::vector<AttentionStream> attentionScratch_;
  std::vector<int32_t> queryPositionScratch_;
  std::mutex backgroundMutex_;
  std::condition_variable backgroundLeft_;
  uint32_t backgroundCount_ = 0;
  std::atomic<bool> cancelBackground_{false};
};

// Builds the backend named by config.device ('cpu' or 'cuda') and the cache over it.
// `cudaFactory`, when given, replaces the CUDA backend (the binding passes the emulated
// backend here for parity tests on machines without a GPU).
using BackendFactory = std::unique_ptr<Backend> (*)(const BackendOptions&);
Status createCache(const CacheConfig& config, std::unique_ptr<Cache>* out, BackendFactory cudaFactory = nullptr);

}  // namespace kvc
