// See host_staging.h.
#include "host_staging.h"

#include <algorithm>
#include <string>

namespace kvc {

namespace {

uint64_t blocksFor(int64_t rows, uint32_t blockSize) { return static_cast<uint64_t>((rows + blockSize - 1) / blockSize); }

// Host copies of some streams of the cache in a CPU backend's pool, plus room for new
// streams (rebuilt ones).
class HostStaging {
 public:
  // copy[i] false: stream i keeps its length but no rows (its scores are given).
  static Status create(Cache& cache, const StreamView* streams, const std::vector<bool>& copy, uint64_t spareBlocks,
                       std::unique_ptr<HostStaging>* out) {
    const BlockLayout& L = cache.pool().layout;
    uint64_t blocks = spareBlocks;
    for (size_t i = 0; i < copy.size(); ++i)
      if (copy[i]) blocks += blocksFor(streams[i].length, L.blockSize);
    auto s = std::unique_ptr<HostStaging>(new HostStaging());
    BackendOptions options;
    options.threads = cache.config().threads;
    s->backend_ = createCpuBackend(options);
    s->layout_ = L;
    s->capacity_ = blocks;
    KVC_RETURN_IF_ERROR(s->backend_->reservePool(std::max<uint64_t>(1, blocks), L.blockBytes));
    KVC_RETURN_IF_ERROR(s->backend_->commitPool(std::max<uint64_t>(1, blocks)));
    std::vector<uint8_t> keyRows, valueRows;
    std::vector<float> beta;
    std::vector<int32_t> positions;
    for (size_t i = 0; i < copy.size(); ++i) {
      const StreamView& src = streams[i];
      if (!copy[i] || src.length <= 0) {
        s->streams_.push_back(StreamView{nullptr, src.length});
        continue;
      }
      StreamView dst;
      KVC_RETURN_IF_ERROR(s->newStream(static_cast<uint32_t>(src.length), &dst));
      const uint32_t n = static_cast<uint32_t>(src.length);
      keyRows.resize(static_cast<size_t>(n) * L.keyRowBytes);
      valueRows.resize(static_cast<size_t>(n) * L.valueRowBytes);
      beta.resize(n);
      positions.resize(n);
      KVC_RETURN_IF_ERROR(cache.mutableBackend().readRawRows(cache.pool(), src, 0, n, keyRows.data(), valueRows.data(),
                                                             beta.data(), positions.data()));
      KVC_RETURN_IF_ERROR(s->backend_->writeRawRows(s->pool(), dst, 0, n, keyRows.data(), valueRows.data(), beta.data(),
                                                    positions.data()));
      s->streams_.push_back(dst);
    }
    *out = std::move(s);
    return Status::ok();
  }

  Backend& backend() { return *backend_; }
  PoolView pool() const { return PoolView{backend_->poolBase(), layout_}; }
  const StreamView& stream(size_t i) const { return streams_[i]; }
  uint64_t bytes() const { return backend_->committedBytes() + backend_->workspaceBytes(); }

  // A stream of `rows` fresh rows (contents undefined until written).
  Status newStream(uint32_t rows, StreamView* out) {
    const uint64_t nb = blocksFor(rows, layout_.blockSize);
    if (used_ + nb > capacity_) return internalError("host staging: out of staging blocks");
    tables_.push_back(std::make_unique<std::vector<int32_t>>(nb));
    for (uint64_t b = 0; b < nb; ++b) (*tables_.back())[b] = static_cast<int32_t>(used_ + b);
    used_ += nb;
    *out = StreamView{tables_.back()->data(), static_cast<int32_t>(rows)};
    return Status::ok();
  }

 private:
  HostStaging() = default;
  std::unique_ptr<Backend> backend_;
  BlockLayout layout_;
  uint64_t capacity_ = 0, used_ = 0;
  std::vector<std::unique_ptr<std::vector<int32_t>>> tables_;  // stable addresses for the views
  std::vector<StreamView> streams_;
};

// A compaction computed on a host copy: the rebuilt streams (kept rows gathered, fitted rows
// re-encoded) wait in the staging pool until apply copies them to the device.
class StagedCompactionFit final : public CompactionFit {
 public:
  std::unique_ptr<HostStaging> staging;
  std::vector<StreamView> rebuilt;
  uint64_t bytes() const override { return staging ? staging->bytes() : 0; }
};

bool unsupported(const Status& s) { return s.code() == StatusCode::kUnsupported; }

}  // namespace

Status backendRowScores(Cache& cache, const RowScoreInput* streams, uint32_t count, float* const* scores) {
  Status s = cache.mutableBackend().rowScores(cache.pool(), cache.codec(), streams, count, scores);
  if (!unsupported(s)) return s;
  std::vector<StreamView> views(count);
  std::vector<bool> copy(count);
  for (uint32_t i = 0; i < count; ++i) {
    views[i] = streams[i].stream;
    copy[i] = streams[i].kind != RowScoreKind::kGiven;
  }
  std::unique_ptr<HostStaging> staging;
  KVC_RETURN_IF_ERROR(HostStaging::create(cache, views.data(), copy, 0, &staging));
  std::vector<RowScoreInput> host(streams, streams + count);
  for (uint32_t i = 0; i < count; ++i) host[i].stream = staging->stream(i);
  return staging->backend().rowScores(staging->pool(), cache.codec(), host.data(), count, scores);
}

Status backendSelectRows(Cache& cache, const RowSelectInput* streams, uint32_t count, std::vector<int32_t>* keep) {
  Status s = cache.mutableBackend().selectRows(cache.pool(), cache.codec(), streams, count, keep);
  if (!unsupported(s)) return s;
  std::vector<StreamView> views(count);
  std::vector<bool> copy(count);
  for (uint32_t i = 0; i < count; ++i) {
    views[i] = streams[i].score.stream;
    copy[i] = streams[i].score.kind != RowScoreKind::kGiven;
  }
  std::unique_ptr<HostStaging> staging;
  KVC_RETURN_IF_ERROR(HostStaging::create(cache, views.data(), copy, 0, &staging));
  std::vector<RowSelectInput> host(streams, streams + count);
  for (uint32_t i = 0; i < count; ++i) host[i].score.stream = staging->stream(i);
  return staging->backend().selectRows(staging->pool(), cache.codec(), host.data(), count, keep);
}

Status backendCompactStreams(Cache& cache, const CompactionStreamInput* streams, uint32_t count,
                             const compaction::Options& options, const CompactionControl& control,
                             CompactionStreamReport* reports, std::unique_ptr<CompactionFit>* fit) {
  Status s = cache.mutableBackend().compactStreams(cache.pool(), cache.codec(), streams, count, options, control, reports, fit);
  if (!unsupported(s)) return s;
  const uint32_t B = cache.pool().layout.blockSize;
  std::vector<StreamView> views(count);
  std::vector<bool> copy(count, true);
  uint64_t spare = 0;  // room for the rebuilt streams (chunked compaction may keep a few rows over target)
  for (uint32_t i = 0; i < count; ++i) {
    views[i] = streams[i].stream;
    spare += blocksFor(streams[i].stream.length, B);
  }
  auto staged = std::make_unique<StagedCompactionFit>();
  KVC_RETURN_IF_ERROR(HostStaging::create(cache, views.data(), copy, spare, &staged->staging));
  HostStaging& staging = *staged->staging;
  std::vector<CompactionStreamInput> host(streams, streams + count);
  for (uint32_t i = 0; i < count; ++i) host[i].stream = staging.stream(i);
  std::unique_ptr<CompactionFit> hostFit;
  KVC_RETURN_IF_ERROR(staging.backend().compactStreams(staging.pool(), cache.codec(), host.data(), count, options, control,
                                                       reports, &hostFit));
  // Rebuild each stream on the host now (gather + the fitted rows), so apply only copies.
  staged->rebuilt.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const std::vector<int32_t>& k = reports[i].keep;
    const uint32_t t = static_cast<uint32_t>(k.size());
    if (t > static_cast<uint32_t>(streams[i].stream.length)) return internalError("host staging: more rows kept than the stream holds");
    KVC_RETURN_IF_ERROR(staging.newStream(t, &staged->rebuilt[i]));
    KVC_RETURN_IF_ERROR(staging.backend().gatherRows(staging.pool(), host[i].stream, k.data(), t, staged->rebuilt[i], 0));
    KVC_RETURN_IF_ERROR(staging.backend().applyCompactionFit(staging.pool(), cache.codec(), *hostFit, i, staged->rebuilt[i]));
  }
  *fit = std::move(staged);
  return Status::ok();
}

Status backendApplyCompactionFit(Cache& cache, const CompactionFit& fit, uint32_t index, const StreamView& rebuilt) {
  const auto* staged = dynamic_cast<const StagedCompactionFit*>(&fit);
  if (!staged) return cache.mutableBackend().applyCompactionFit(cache.pool(), cache.codec(), fit, index, rebuilt);
  if (index >= staged->rebuilt.size()) return invalidArgument("applyCompactionFit: stream " + std::to_string(index) + " is not in the fit");
  const StreamView& src = staged->rebuilt[index];
  if (src.length != rebuilt.length) return internalError("host staging: the rebuilt stream's length differs");
  if (src.length == 0) return Status::ok();
  const BlockLayout& L = cache.pool().layout;
  const uint32_t n = static_cast<uint32_t>(src.length);
  std::vector<uint8_t> keyRows(static_cast<size_t>(n) * L.keyRowBytes), valueRows(static_cast<size_t>(n) * L.valueRowBytes);
  std::vector<float> beta(n);
  std::vector<int32_t> positions(n);
  HostStaging& staging = *staged->staging;
  KVC_RETURN_IF_ERROR(staging.backend().readRawRows(staging.pool(), src, 0, n, keyRows.data(), valueRows.data(), beta.data(),
                                                    positions.data()));
  return cache.mutableBackend().writeRawRows(cache.pool(), rebuilt, 0, n, keyRows.data(), valueRows.data(), beta.data(),
                                             positions.data());
}

}  // namespace kvc
