// See rope_stage.h. The stage's rows are written by the backend's own append (f32 in, f32
// stored: exact), so a device backend finds them in its pool like any rows.
#include "rope_stage.h"

#include <algorithm>
#include <string>

#include "../cache.h"
#include "kvc/rope.h"

namespace kvc {

namespace {

uint32_t blocksFor(int64_t rows, uint32_t blockSize) { return static_cast<uint32_t>((rows + blockSize - 1) / blockSize); }

}  // namespace

Status RopeStage::build(Cache& cache, const Sequence& seq, const std::vector<uint8_t>& streams, bool byRank) {
  reset();
  byRank_ = byRank;
  const CacheConfig& c = cache.config();
  const uint32_t D = c.headDim, RV = c.lowRank() ? c.valueStoredDim() : D;
  // f32 rows: the fit sees the stored keys rotated with no second rounding. They are wider
  // than the cache's rows, so a pool slot holds fewer of them (as a lower tier's holds more).
  const uint32_t slot = cache.pool().layout.blockBytes;
  uint32_t rows = c.blockSize;
  while (rows > 0 && makeBlockLayout(rows, 4 * D, 4 * RV).blockBytes > slot) --rows;
  if (rows == 0) {
    return unsupported("compaction of a cache with rope stages rows as f32 (" + std::to_string(4 * (D + RV)) +
                       " bytes per row), which do not fit in a block of " + std::to_string(slot) + " bytes; use a larger blockSize");
  }
  pool_.layout = makeBlockLayout(rows, 4 * D, 4 * RV);
  pool_.layout.blockBytes = slot;
  pool_.summaries = nullptr;
  codec_ = RowCodec();
  codec_.keyStorage = Storage::kF32;
  codec_.valueStorage = Storage::kF32;
  codec_.headDim = D;
  codec_.valueDim = RV != D ? RV : 0;
  codec_.groupSize = c.groupSize;
  spec_ = c.rope();
  buildRopeTables(spec_, &cos_, &sin_);
  cache_ = &cache;
  seq_.nextPosition = seq.nextPosition;
  seq_.streams.assign(seq.streams.size(), Stream());
  sortedPositions_.assign(seq.streams.size(), std::vector<int32_t>());
  for (size_t i = 0; i < seq.streams.size(); ++i) {
    if (!streams[i]) continue;
    const Status status = cache.stageRopeStream(seq.streams[i], *this, &seq_.streams[i], byRank ? &sortedPositions_[i] : nullptr);
    if (!status.isOk()) {
      reset();
      return status;
    }
    std::sort(sortedPositions_[i].begin(), sortedPositions_[i].end());
  }
  return Status::ok();
}

PoolView RopeStage::pool() const {
  PoolView p = pool_;
  p.base = cache_ ? cache_->pool().base : nullptr;
  return p;
}

uint64_t RopeStage::blocks() const {
  uint64_t n = 0;
  for (const Stream& s : seq_.streams) n += s.blocks.size();
  return n;
}

void RopeStage::rotate(float* x, uint32_t n, uint32_t perPosition, const int32_t* positions) const {
  const uint32_t D = codec_.headDim, dims = spec_.dims;
  std::vector<float> cBuf(dims), sBuf(dims);
  for (uint32_t i = 0; i < n; i += perPosition) {
    const float* c;
    const float* s;
    ropeLevelAngles(cos_.data(), sin_.data(), dims, static_cast<uint32_t>(positions[i / perPosition]), cBuf.data(), sBuf.data(), &c, &s);
    for (uint32_t j = i; j < std::min(n, i + perPosition); ++j) ropeApply(x + static_cast<size_t>(j) * D, spec_, c, s);
  }
}

void RopeStage::reset() {
  if (cache_) {
    for (Stream& s : seq_.streams) cache_->releaseStaged(&s);
  }
  cache_ = nullptr;
  seq_ = Sequence();
  sortedPositions_.clear();
}

Status Cache::stageRopeStream(const Stream& s, const RopeStage& stage, Stream* out, std::vector<int32_t>* storedPositions) {
  releaseStaged(out);
  if (storedPositions) storedPositions->clear();
  const PoolView dst = stage.pool();
  const uint32_t rpb = dst.layout.blockSize;
  const uint32_t D = config_.headDim, R = config_.storedDim(), RV = config_.valueStoredDim();
  if (config_.lowRank() && !s.basis && s.length > 0) return internalError("stageRopeStream: a calibrating low-rank stream");
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(blocksFor(s.length, rpb), &fresh));
  // Whole destination blocks per chunk (each chunk starts a block), bounded host memory.
  const uint32_t chunk = rpb * std::max<uint32_t>(1, 4096 / rpb);
  std::vector<float> stored, keys, values, beta;
  std::vector<int32_t> positions, ranks;
  for (uint32_t c0 = 0; c0 < static_cast<uint32_t>(s.length); c0 += chunk) {
    const uint32_t n = std::min(chunk, static_cast<uint32_t>(s.length) - c0);
    stored.resize(static_cast<size_t>(n) * R);
    keys.resize(static_cast<size_t>(n) * D);
    values.resize(static_cast<size_t>(n) * RV);
    beta.resize(n);
    positions.resize(n);
    Status status = readStreamRows(s, c0, n, stored.data(), values.data(), beta.data(), positions.data());
    if (status.isOk()) {
      if (storedPositions) storedPositions->insert(storedPositions->end(), positions.begin(), positions.end());
      // Low-rank keys are coefficients of pre-RoPE keys: lifted to headDim, then rotated.
      if (config_.lowRank()) {
        lowRank_->lift(stored.data(), R, n, R, s.basis->keys.data(), D, keys.data(), D);
      } else {
        keys.swap(stored);
      }
      if (stage.byRank()) {
        ranks.resize(n);
        for (uint32_t i = 0; i < n; ++i) ranks[i] = static_cast<int32_t>(c0 + i);
      }
      stage.rotate(keys.data(), n, 1, stage.byRank() ? ranks.data() : positions.data());
      status = writeRowsAt(dst, stage.codec(), fresh.data() + c0 / rpb, n, keys.data(), values.data(), positions.data(), beta.data());
    }
    if (!status.isOk()) {
      for (int32_t b : fresh) pool_.release(b);
      return status;
    }
  }
  out->blocks = std::move(fresh);
  out->length = s.length;
  out->queries = s.queries;
  return Status::ok();
}

}  // namespace kvc
