// The backend interface (implemented by cpp/cpu and cuda/, driven by cpp/core): owns the block pool memory and runs the row operations on it.
// The core (block pool, sequences, policies) decides *which* rows and blocks; a backend
// decides *how* bytes are written and read. CPU and CUDA implement the same set.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kvc/compaction_ops.h"
#include "kvc/lowrank_ops.h"
#include "kvc/status.h"
#include "kvc/views.h"

namespace kvc {

struct BackendOptions {
  uint32_t threads = 0;  // CPU worker threads; 0 = hardware concurrency
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Reserves address space (or device memory) for `capacityBlocks` blocks of `blockBytes`;
  // nothing needs to be committed yet. Called once.
  virtual Status reservePool(uint64_t capacityBlocks, uint32_t blockBytes) = 0;
  // Makes blocks [0, blocks) usable; never shrinks. Fails with OUT_OF_MEMORY and no change.
  virtual Status commitPool(uint64_t blocks) = 0;
  virtual uint8_t* poolBase() = 0;
  // Reserves the key-summary side array next to the pool: one entry of `entryBytes` per block
  // id (kvc/key_summary.h), committed and counted with the pool. Called once, after reservePool.
  virtual Status reserveSummaries(uint32_t entryBytes) {
    (void)entryBytes;
    return unsupported(std::string("key summaries are not implemented by the ") + name() + " backend");
  }
  // The side array (nullptr when not reserved); a device pointer on a GPU backend.
  virtual uint8_t* summaryBase() { return nullptr; }
  // Bytes of pool memory committed (resident or device-allocated).
  virtual uint64_t committedBytes() const = 0;

  virtual Status append(const AppendParams& params) = 0;
  virtual Status attention(const AttentionParams& params) = 0;
  // Copies whole blocks src[i] -> dst[i] (copy-on-write of a shared partial block), with their
  // key-summary entries when pool.summaries is set.
  virtual Status copyBlocks(const PoolView& pool, const int32_t* src, const int32_t* dst, uint32_t count) = 0;
  // Decodes rows [start, start + count) of one stream into host f32 / i32 arrays
  // (keys and values [count][headDim], beta and positions [count]); any may be nullptr.
  virtual Status readRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream,
                          uint32_t start, uint32_t count, float* keys, float* values, float* beta,
                          int32_t* positions) = 0;
  // Moves rows bit-exactly: row i of the destination stream (starting at dstStart) is row
  // srcRows[i] of the source stream. Quantized rows are not requantized.
  virtual Status gatherRows(const PoolView& pool, const StreamView& src, const int32_t* srcRows,
                            uint32_t count, const StreamView& dst, uint32_t dstStart) = 0;
  // Re-encodes existing rows [start, start + count) of a stream: new values (f32
  // [count][headDim] in the original space; rotated and quantized exactly as append does)
  // and/or new beta [count]; nullptr leaves that part as it is. Keys are never rewritten.
  // Required: compaction applies its keep sets before it rewrites, so a backend that could
  // not rewrite would leave a half-compacted sequence.
  virtual Status rewriteRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                             uint32_t count, const float* values, const float* beta) = 0;
  // ---- key summaries and sparse decode (kvc/views.h; used only when the layout has summaries) ----
  // Folds rows of blocks into their key summaries (SummaryJob). Jobs name distinct blocks.
  // With rope.dims != 0 (keys stored before RoPE) a key enters its summary after RoPE at the
  // row's stored position, so the bounds hold for queries rotated at their own positions.
  virtual Status summarizeBlocks(const PoolView& pool, const RowCodec& codec, const RopeSpec& rope, const SummaryJob* jobs,
                                 uint32_t count) {
    (void)pool, (void)codec, (void)rope, (void)jobs, (void)count;
    return unsupported(std::string("summarizeBlocks is not implemented by the ") + name() + " backend");
  }
  // Upper bounds of the logits of every block of every stream (BlockBoundsParams).
  virtual Status blockBounds(const BlockBoundsParams& params) {
    (void)params;
    return unsupported(std::string("blockBounds is not implemented by the ") + name() + " backend");
  }
  // ---- compaction and eviction numerics (kvc/compaction_ops.h, ARCHITECTURE §9) ----
  // Streams per compactStreams call this backend handles best (the CPU: two per thread; a GPU:
  // as many as its memory allows, since one launch fits them all).
  virtual uint32_t compactionBatchSize(uint32_t threads) const { return 2 * (threads ? threads : 1); }
  // Attention Matching on `count` streams at once: score pass, selection (highest attention
  // or OMP) with top-k, NNLS fit of beta, ridge least-squares fit of the values, diagnostics.
  // Reads the pool, writes nothing to it. reports [count]; *fit receives the fitted rows,
  // which stay where they were computed until applyCompactionFit.
  virtual Status compactStreams(const PoolView& pool, const RowCodec& codec, const CompactionStreamInput* streams,
                                uint32_t count, const compaction::Options& options, const CompactionControl& control,
                                CompactionStreamReport* reports, std::unique_ptr<CompactionFit>* fit) {
    (void)pool, (void)codec, (void)streams, (void)count, (void)options, (void)control, (void)reports, (void)fit;
    return unsupported(std::string("compactStreams is not implemented by the ") + name() + " backend");
  }
  // After the core rebuilt stream `index` of the batch from reports[index].keep (row j of
  // `rebuilt` holds the row keep[j] had), re-encodes the fitted beta and values of the rows the
  // fit changed, exactly as rewriteRows would. Kept keys are never rewritten.
  virtual Status applyCompactionFit(const PoolView& pool, const RowCodec& codec, const CompactionFit& fit,
                                    uint32_t index, const StreamView& rebuilt) {
    (void)pool, (void)codec, (void)fit, (void)index, (void)rebuilt;
    return unsupported(std::string("applyCompactionFit is not implemented by the ") + name() + " backend");
  }
  // Eviction: per-row scores of `count` streams into host arrays scores[i] [length] (the
  // budget planner needs them on the host: 4 bytes per row, never the rows themselves).
  virtual Status rowScores(const PoolView& pool, const RowCodec& codec, const RowScoreInput* streams, uint32_t count,
                           float* const* scores) {
    (void)pool, (void)codec, (void)streams, (void)count, (void)scores;
    return unsupported(std::string("rowScores is not implemented by the ") + name() + " backend");
  }
  // Eviction: scores and keep sets of `count` streams in one pass where the rows live;
  // keep[i] receives stream i's kept row indices, ascending.
  virtual Status selectRows(const PoolView& pool, const RowCodec& codec, const RowSelectInput* streams, uint32_t count,
                            std::vector<int32_t>* keep) {
    (void)pool, (void)codec, (void)streams, (void)count, (void)keep;
    return unsupported(std::string("selectRows is not implemented by the ") + name() + " backend");
  }

  // Low-rank storage numerics on host memory (kvc/lowrank_ops.h); nullptr when this backend
  // has none (the core then uses hostLowRankKernels(): these run on host data either way).
  virtual const LowRankKernels* lowRank() const { return nullptr; }

  // Whether attention() reads value rows of RowCodec::valueDim floats (writing outputs of that
  // width per query head, at the queries' tokenStride), as append and readRows do. Without
  // it, low-rank caches with unequal key and value ranks attend on the host.
  virtual bool attendsValueDim() const { return false; }
  // Whether attention() lifts low-rank key rows to full width before RoPE
  // (AttentionParams::liftDim). Without it, low-rank caches with rope attend on the host.
  virtual bool attendsLiftedKeys() const { return false; }

  // Host threads for the core's own host loops (the host low-rank attention,
  // cpp/core/lowrank_host.cpp): the CPU backend lends its pool (the cache's `threads`), others
  // run on the caller. parallelFor runs fn(task, participant) for every task in [0, tasks),
  // participant < hostThreads() (for per-participant scratch), and returns when all are done.
  // Tasks must write disjoint memory, not throw, and not call back into an operation of this
  // backend that uses its threads (attention, compaction, eviction); readRows is allowed.
  virtual uint32_t hostThreads() const { return 1; }
  virtual void parallelFor(uint32_t tasks, const std::function<void(uint32_t, uint32_t)>& fn) {
    for (uint32_t t = 0; t < tasks; ++t) fn(t, 0);
  }

  // Scratch memory the backend holds for the numerics above (its workspace: one per cache,
  // kept between calls, freed with the backend); reported by Cache::stats().workspaceBytes.
  virtual uint64_t workspaceBytes() const { return 0; }
  // Frees the workspace memory no running operation uses.
  virtual void trimWorkspace() {}

  // Raw encoded rows for serialization: keys [count][keyRowBytes], values
  // [count][valueRowBytes], beta [count], positions [count] (host memory), bit-exact.
  virtual Status readRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                             uint8_t* keyRows, uint8_t* valueRows, float* beta, int32_t* positions) {
    (void)pool, (void)stream, (void)start, (void)count, (void)keyRows, (void)valueRows, (void)beta, (void)positions;
    return unsupported(std::string("readRawRows is not implemented by the ") + name() + " backend");
  }
  virtual Status writeRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                              const uint8_t* keyRows, const uint8_t* valueRows, const float* beta,
                              const int32_t* positions) {
    (void)pool, (void)stream, (void)start, (void)count, (void)keyRows, (void)valueRows, (void)beta, (void)positions;
    return unsupported(std::string("writeRawRows is not implemented by the ") + name() + " backend");
  }
};

// nullptr (and *status set, when given) if the backend's threads could not be started.
std::unique_ptr<Backend> createCpuBackend(const BackendOptions& options, Status* status = nullptr);

// Describes the CUDA backend on this machine: compiled in or not, and usable or not.
struct CudaInfo {
  bool compiled = false;
  bool available = false;
  std::string reason;       // why not available
  std::string deviceName;
  int deviceCount = 0;
  int runtimeVersion = 0;
  int driverVersion = 0;
  uint64_t totalMemory = 0;
  int computeCapability = 0;  // major * 10 + minor
};
CudaInfo queryCuda();
// Returns nullptr with `status` set when CUDA is not available.
std::unique_ptr<Backend> createCudaBackend(const BackendOptions& options, Status* status);

}  // namespace kvc
