// The CPU backend's compaction operations (kvc/compaction_ops.h, ARCHITECTURE §9): reads each
// stream's rows from the host pool, runs compactBatch on them, and keeps the fitted beta and
// values in a CpuCompactionFit until the core has rebuilt the streams and applies them. All
// scratch memory lives in the backend's CompactionWorkspace (one per cache).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kvc/backend.h"
#include "workspace.h"

namespace kvc::cpu {

// Everything compact() reads for one stream that is not in the caller's arrays.
struct StreamInput {
  std::vector<float> keys, values, beta, keyQueries;
  std::vector<uint8_t> protectedRows;
  size_t capacityBytes() const {
    return 4 * (keys.capacity() + values.capacity() + beta.capacity() + keyQueries.capacity()) +
           protectedRows.capacity();
  }
};

// The cache's compaction memory: scratch sets and stream input buffers, kept between calls
// (fresh multi-MB buffers cost a page fault per 4 KiB on first touch) and freed with the
// backend. Safe for concurrent compactions of different sequences.
class CompactionWorkspace {
 public:
  CompactionWorkspace();
  ~CompactionWorkspace();
  compaction::Workspace& scratch() { return scratch_; }
  // Everything held, in bytes (idle and in use).
  uint64_t bytes() const { return scratch_.bytes(); }
  // Frees what no compaction is using.
  void trim();

  std::vector<StreamInput> takeInputs(size_t count);
  void putInputs(std::vector<StreamInput> inputs);

 private:
  static constexpr size_t kMaxKeptInputBytes = size_t(64) << 20;  // a bigger set is freed after use
  static constexpr size_t kMaxKeptInputSets = 4;
  struct KeptInputs {
    std::vector<StreamInput> inputs;
    size_t bytes = 0;
  };
  compaction::Workspace scratch_;
  std::mutex mutex_;
  std::vector<KeptInputs> inputs_;
};

// The fitted rows of one batch, in host memory.
class CpuCompactionFit final : public CompactionFit {
 public:
  struct Stream {
    std::vector<float> beta;       // [t]
    std::vector<float> values;     // [t, headDim]
    std::vector<uint8_t> changed;  // [t] 1: value or beta differ from the stored row
  };
  std::vector<Stream> streams;
  uint64_t bytes() const override;
};

// Backend::compactStreams and applyCompactionFit of the CPU backend; `rows` is that backend
// (its readRows and rewriteRows move the rows).
Status compactStreams(Backend& rows, CompactionWorkspace& workspace, const PoolView& pool, const RowCodec& codec,
                      const CompactionStreamInput* streams, uint32_t count, const compaction::Options& options,
                      const CompactionControl& control, CompactionStreamReport* reports,
                      std::unique_ptr<CompactionFit>* fit);
Status applyCompactionFit(Backend& rows, const PoolView& pool, const RowCodec& codec, const CompactionFit& fit,
                          uint32_t index, const StreamView& rebuilt);

}  // namespace kvc::cpu
