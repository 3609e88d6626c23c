// See faulty_backend.h.
#include "faulty_backend.h"

namespace kvc::testing {

const char* backendCallName(BackendCall call) {
  switch (call) {
    case kReservePool: return "reservePool";
    case kCommitPool: return "commitPool";
    case kAppend: return "append";
    case kAttention: return "attention";
    case kCopyBlocks: return "copyBlocks";
    case kReadRows: return "readRows";
    case kGatherRows: return "gatherRows";
    case kRewriteRows: return "rewriteRows";
    case kCompactStreams: return "compactStreams";
    case kApplyCompactionFit: return "applyCompactionFit";
    case kRowScores: return "rowScores";
    case kSelectRows: return "selectRows";
    case kReadRawRows: return "readRawRows";
    case kWriteRawRows: return "writeRawRows";
    default: return "?";
  }
}

void FaultyBackend::arm(uint64_t k, StatusCode code, FaultTiming timing, uint32_t mask) {
  failAt_ = k;
  code_ = code;
  timing_ = timing;
  mask_ = mask;
  calls_ = 0;
  fired_ = false;
  firedCall_ = kAllCalls;
}

template <typename F>
Status FaultyBackend::run(BackendCall which, F&& call) {
  if (!(mask_ & which)) return call();
  const bool fail = ++calls_ == failAt_;
  if (!fail) return call();
  fired_ = true;
  firedCall_ = which;
  if (timing_ == FaultTiming::kAfter) (void)call();
  return Status(code_, std::string("injected fault in ") + backendCallName(which) + " (call " + std::to_string(calls_) + ")");
}

Status FaultyBackend::reservePool(uint64_t capacityBlocks, uint32_t blockBytes) {
  return run(kReservePool, [&] { return inner_->reservePool(capacityBlocks, blockBytes); });
}
Status FaultyBackend::commitPool(uint64_t blocks) {
  return run(kCommitPool, [&] { return inner_->commitPool(blocks); });
}
Status FaultyBackend::append(const AppendParams& params) {
  return run(kAppend, [&] { return inner_->append(params); });
}
Status FaultyBackend::attention(const AttentionParams& params) {
  return run(kAttention, [&] { return inner_->attention(params); });
}
Status FaultyBackend::copyBlocks(const PoolView& pool, const int32_t* src, const int32_t* dst, uint32_t count) {
  return run(kCopyBlocks, [&] { return inner_->copyBlocks(pool, src, dst, count); });
}
Status FaultyBackend::readRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                               uint32_t count, float* keys, float* values, float* beta, int32_t* positions) {
  return run(kReadRows, [&] { return inner_->readRows(pool, codec, stream, start, count, keys, values, beta, positions); });
}
Status FaultyBackend::gatherRows(const PoolView& pool, const StreamView& src, const int32_t* srcRows, uint32_t count,
                                 const StreamView& dst, uint32_t dstStart) {
  return run(kGatherRows, [&] { return inner_->gatherRows(pool, src, srcRows, count, dst, dstStart); });
}
Status FaultyBackend::rewriteRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                                  uint32_t count, const float* values, const float* beta) {
  return run(kRewriteRows, [&] { return inner_->rewriteRows(pool, codec, stream, start, count, values, beta); });
}
Status FaultyBackend::compactStreams(const PoolView& pool, const RowCodec& codec, const CompactionStreamInput* streams,
                                     uint32_t count, const compaction::Options& options, const CompactionControl& control,
                                     CompactionStreamReport* reports, std::unique_ptr<CompactionFit>* fit) {
  return run(kCompactStreams,
             [&] { return inner_->compactStreams(pool, codec, streams, count, options, control, reports, fit); });
}
Status FaultyBackend::applyCompactionFit(const PoolView& pool, const RowCodec& codec, const CompactionFit& fit,
                                         uint32_t index, const StreamView& rebuilt) {
  return run(kApplyCompactionFit, [&] { return inner_->applyCompactionFit(pool, codec, fit, index, rebuilt); });
}
Status FaultyBackend::rowScores(const PoolView& pool, const RowCodec& codec, const RowScoreInput* streams, uint32_t count,
                                float* const* scores) {
  return run(kRowScores, [&] { return inner_->rowScores(pool, codec, streams, count, scores); });
}
Status FaultyBackend::selectRows(const PoolView& pool, const RowCodec& codec, const RowSelectInput* streams,
                                 uint32_t count, std::vector<int32_t>* keep) {
  return run(kSelectRows, [&] { return inner_->selectRows(pool, codec, streams, count, keep); });
}
Status FaultyBackend::readRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                                  uint8_t* keyRows, uint8_t* valueRows, float* beta, int32_t* positions) {
  return run(kReadRawRows, [&] { return inner_->readRawRows(pool, stream, start, count, keyRows, valueRows, beta, positions); });
}
Status FaultyBackend::writeRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                                   const uint8_t* keyRows, const uint8_t* valueRows, const float* beta,
                                   const int32_t* positions) {
  return run(kWriteRawRows,
             [&] { return inner_->writeRawRows(pool, stream, start, count, keyRows, valueRows, beta, positions); });
}

}  // namespace kvc::testing
