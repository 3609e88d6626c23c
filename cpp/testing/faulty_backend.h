// Test build only: a kvc::Backend that wraps another one and fails a chosen call, so tests
// can prove that every cache operation is all or nothing under backend faults (cache.h,
// "Transactions"). Never linked into the addon.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvc/backend.h"

namespace kvc::testing {

// The virtuals of Backend that can fail, as a bit mask.
enum BackendCall : uint32_t {
  kReservePool = 1u << 0,
  kCommitPool = 1u << 1,
  kAppend = 1u << 2,
  kAttention = 1u << 3,
  kCopyBlocks = 1u << 4,
  kReadRows = 1u << 5,
  kGatherRows = 1u << 6,
  kRewriteRows = 1u << 7,
  kCompactStreams = 1u << 8,
  kApplyCompactionFit = 1u << 9,
  kRowScores = 1u << 10,
  kSelectRows = 1u << 11,
  kReadRawRows = 1u << 12,
  kWriteRawRows = 1u << 13,
  kAllCalls = (1u << 14) - 1,
};
const char* backendCallName(BackendCall call);

// How the injected failure behaves.
enum class FaultTiming {
  kBefore,  // the call returns the error without reaching the wrapped backend
  kAfter,   // the wrapped backend runs the call (its writes happen), then the error is returned:
            // a device that wrote part of its output before it failed
};

class FaultyBackend final : public Backend {
 public:
  explicit FaultyBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  // Counts the calls in `mask` from now on; the k-th of them (1-based) fails with `code`.
  // k = 0 counts without failing.
  void arm(uint64_t k, StatusCode code = StatusCode::kCudaError, FaultTiming timing = FaultTiming::kBefore,
           uint32_t mask = kAllCalls);
  void disarm() { arm(0); }
  // Calls in the mask since arm(), and whether the fault fired (and in which call).
  uint64_t calls() const { return calls_; }
  bool fired() const { return fired_; }
  BackendCall firedCall() const { return firedCall_; }
  Backend& inner() { return *inner_; }

  const char* name() const override { return inner_->name(); }
  Status reservePool(uint64_t capacityBlocks, uint32_t blockBytes) override;
  Status commitPool(uint64_t blocks) override;
  uint8_t* poolBase() override { return inner_->poolBase(); }
  Status reserveSummaries(uint32_t entryBytes) override { return inner_->reserveSummaries(entryBytes); }
  uint8_t* summaryBase() override { return inner_->summaryBase(); }
  uint64_t committedBytes() const override { return inner_->committedBytes(); }
  Status append(const AppendParams& params) override;
  Status attention(const AttentionParams& params) override;
  Status copyBlocks(const PoolView& pool, const int32_t* src, const int32_t* dst, uint32_t count) override;
  Status readRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start, uint32_t count,
                  float* keys, float* values, float* beta, int32_t* positions) override;
  Status gatherRows(const PoolView& pool, const StreamView& src, const int32_t* srcRows, uint32_t count,
                    const StreamView& dst, uint32_t dstStart) override;
  Status rewriteRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                     uint32_t count, const float* values, const float* beta) override;
  uint32_t compactionBatchSize(uint32_t threads) const override { return inner_->compactionBatchSize(threads); }
  bool attendsValueDim() const override { return inner_->attendsValueDim(); }
  bool attendsLiftedKeys() const override { return inner_->attendsLiftedKeys(); }
  Status compactStreams(const PoolView& pool, const RowCodec& codec, const CompactionStreamInput* streams,
                        uint32_t count, const compaction::Options& options, const CompactionControl& control,
                        CompactionStreamReport* reports, std::unique_ptr<CompactionFit>* fit) override;
  Status applyCompactionFit(const PoolView& pool, const RowCodec& codec, const CompactionFit& fit, uint32_t index,
                            const StreamView& rebuilt) override;
  Status rowScores(const PoolView& pool, const RowCodec& codec, const RowScoreInput* streams, uint32_t count,
                   float* const* scores) override;
  Status selectRows(const PoolView& pool, const RowCodec& codec, const RowSelectInput* streams, uint32_t count,
                    std::vector<int32_t>* keep) override;
  Status readRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count, uint8_t* keyRows,
                     uint8_t* valueRows, float* beta, int32_t* positions) override;
  Status writeRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                      const uint8_t* keyRows, const uint8_t* valueRows, const float* beta,
                      const int32_t* positions) override;

 private:
  // Runs `call` unless the fault fires before it; returns the injected error when it fires.
  template <typename F>
  Status run(BackendCall which, F&& call);

  std::unique_ptr<Backend> inner_;
  uint64_t failAt_ = 0;
  StatusCode code_ = StatusCode::kCudaError;
  FaultTiming timing_ = FaultTiming::kBefore;
  uint32_t mask_ = kAllCalls;
  uint64_t calls_ = 0;
  bool fired_ = false;
  BackendCall firedCall_ = kAllCalls;
};

}  // namespace kvc::testing
