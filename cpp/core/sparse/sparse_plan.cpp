// Block selection of sparse decode (see sparse_plan.h), and the Cache's upkeep of the key
// summaries the selection reads (cache.h: refreshSummaries).
#include "sparse_plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "../cache.h"
#include "kvc/rope.h"

namespace kvc {

void selectSparseBlocks(const float* bounds, uint32_t blocks, int32_t length, uint32_t B, const SparseSpec& spec,
                        uint32_t tq, std::vector<uint32_t>* picked) {
  picked->clear();
  const uint64_t budget = (static_cast<uint64_t>(spec.tokens) + B - 1) / B;
  if (budget >= blocks) {
    for (uint32_t b = 0; b < blocks; ++b) picked->push_back(b);
    return;
  }
  // Forced: the blocks of the first `sinks` rows and of the newest max(recent, tq) rows.
  const uint32_t sinkBlocks = static_cast<uint32_t>(std::min<uint64_t>(blocks, (uint64_t{spec.sinks} + B - 1) / B));
  const int64_t recentRows = std::max<int64_t>(std::max(spec.recent, tq), 1);
  const uint32_t firstRecent = static_cast<uint32_t>(std::max<int64_t>(0, length - recentRows) / B);
  std::vector<uint32_t> candidates;
  for (uint32_t b = sinkBlocks; b < firstRecent; ++b) candidates.push_back(b);
  const uint64_t forced = sinkBlocks + (blocks - std::max(firstRecent, sinkBlocks));
  const size_t rest = budget > forced ? std::min<size_t>(budget - forced, candidates.size()) : 0;
  auto better = [bounds](uint32_t a, uint32_t b) { return bounds[a] > bounds[b] || (bounds[a] == bounds[b] && a < b); };
  if (rest < candidates.size()) {
    std::nth_element(candidates.begin(), candidates.begin() + rest, candidates.end(), better);
    candidates.resize(rest);
  }
  for (uint32_t b = 0; b < sinkBlocks; ++b) picked->push_back(b);
  picked->insert(picked->end(), candidates.begin(), candidates.end());
  for (uint32_t b = std::max(firstRecent, sinkBlocks); b < blocks; ++b) picked->push_back(b);
  std::sort(picked->begin(), picked->end());
}

Status SparsePlanner::plan(Backend& backend, const PoolView& pool, const RowCodec& codec, AttentionStream* streams,
                           uint32_t count, uint32_t G, uint32_t tq, uint64_t tokenStride, float scale,
                           const SparseSpec& spec, const RopeSpec& rope) {
  const uint32_t B = pool.layout.blockSize;
  blockSize_ = B;
  plans_.resize(count);
  boundsStreams_.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t blocks = (static_cast<uint32_t>(streams[i].kv.length) + B - 1) / B;
    plans_[i].bounds.resize(blocks);
    boundsStreams_[i] = BoundsStream{streams[i].kv, streams[i].queries, plans_[i].bounds.data()};
  }
  if (rope.dims != 0) {
    // The summaries hold keys after RoPE at their stored positions (Backend::summarizeBlocks),
    // so each query is rotated at its own position first: q_rot . k_rot is the logit.
    if (rope.byRank) return unsupported("sparse decode re-indexes no positions: use positions as stored with rope");
    // Each token's angles once, shared by its G query vectors (RopeRotator).
    const uint32_t D = codec.headDim, M = tq * G;
    rotatedQueries_.resize(static_cast<size_t>(count) * M * D);
    RopeRotator rotator(rope);
    for (uint32_t i = 0; i < count; ++i) {
      if (!streams[i].queryPositions) return internalError("sparse decode with rope needs the query positions");
      float* dst = rotatedQueries_.data() + static_cast<size_t>(i) * M * D;
      for (uint32_t t = 0; t < tq; ++t) {
        for (uint32_t g = 0; g < G; ++g) {
          float* q = dst + (static_cast<size_t>(t) * G + g) * D;
          std::memcpy(q, streams[i].queries + t * tokenStride + static_cast<uint64_t>(g) * D, 4ull * D);
          rotator.rotate(q, streams[i].queryPositions[t]);
        }
      }
      boundsStreams_[i].queries = dst;
    }
    tokenStride = static_cast<uint64_t>(G) * D;
  }
  BlockBoundsParams bp;
  bp.pool = pool;
  bp.codec = codec;
  bp.streamCount = count;
  bp.streams = boundsStreams_.data();
  bp.queriesPerHead = G;
  bp.tq = tq;
  bp.tokenStride = tokenStride;
  bp.scale = scale;
  KVC_RETURN_IF_ERROR(backend.blockBounds(bp));
  for (uint32_t i = 0; i < count; ++i) {
    Plan& p = plans_[i];
    AttentionStream& a = streams[i];
    const uint32_t blocks = static_cast<uint32_t>(p.bounds.size());
    selectSparseBlocks(p.bounds.data(), blocks, a.kv.length, B, spec, tq, &p.picked);
    p.sparse = p.picked.size() < blocks;
    p.ownScores = nullptr;
    if (!p.sparse) continue;
    p.table.resize(p.picked.size());
    for (size_t j = 0; j < p.picked.size(); ++j) p.table[j] = a.kv.blockTable[p.picked[j]];
    // The last block (partly filled) is always picked, so only the last picked block is partial.
    const int32_t lastRows = a.kv.length - static_cast<int32_t>((blocks - 1) * B);
    a.kv.blockTable = p.table.data();
    a.kv.length = static_cast<int32_t>((p.picked.size() - 1) * B) + lastRows;
    if (a.scores) {
      p.ownScores = a.scores;
      p.scores.assign(static_cast<size_t>(a.kv.length), 0.0f);
      a.scores = p.scores.data();
    }
  }
  return Status::ok();
}

void SparsePlanner::finish() {
  for (Plan& p : plans_) {
    if (!p.sparse || !p.ownScores) continue;
    for (size_t j = 0; j < p.picked.size(); ++j) {
      const size_t from = j * blockSize_, to = static_cast<size_t>(p.picked[j]) * blockSize_;
      const size_t n = std::min<size_t>(blockSize_, p.scores.size() - from);
      for (size_t r = 0; r < n; ++r) p.ownScores[to + r] += p.scores[from + r];
    }
  }
}

Status Cache::refreshSummaries(const int32_t* blocks, int64_t length, uint32_t firstBlock, uint32_t endBlock) {
  if (layout_.summaryBytes == 0) return Status::ok();
  const uint32_t B = config_.blockSize;
  summaryJobs_.clear();
  for (uint32_t b = firstBlock; b < endBlock; ++b) {
    const int64_t rows = std::min<int64_t>(B, length - int64_t{b} * B);
    if (rows <= 0) break;
    summaryJobs_.push_back(SummaryJob{blocks[b], 0, static_cast<uint32_t>(rows)});
  }
  if (summaryJobs_.empty()) return Status::ok();
  return backend_->summarizeBlocks(pool(), codec(), config_.rope(), summaryJobs_.data(), static_cast<uint32_t>(summaryJobs_.size()));
}

Status Cache::summarizeAppended(const int32_t* const* tables, const int32_t* startRows, uint32_t streams, uint32_t tokens) {
  if (layout_.summaryBytes == 0) return Status::ok();
  const uint32_t B = config_.blockSize;
  summaryJobs_.clear();
  for (uint32_t h = 0; h < streams; ++h) {
    const uint64_t first = static_cast<uint64_t>(startRows[h]), end = first + tokens;
    for (uint64_t r = first; r < end;) {
      const uint64_t b = r / B, blockEnd = std::min<uint64_t>((b + 1) * B, end);
      summaryJobs_.push_back(SummaryJob{tables[h][b], static_cast<uint32_t>(r - b * B), static_cast<uint32_t>(blockEnd - b * B)});
      r = blockEnd;
    }
  }
  return backend_->summarizeBlocks(pool(), codec(), config_.rope(), summaryJobs_.data(), static_cast<uint32_t>(summaryJobs_.size()));
}

Status Cache::sparseSelection(uint64_t id, uint32_t layer, const float* queries, uint32_t tq, const SparseSpec& spec,
                              std::vector<std::vector<uint32_t>>* picked, std::vector<std::vector<float>>* bounds) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  KVC_RETURN_IF_ERROR(checkLayer(layer));
  KVC_RETURN_IF_ERROR(checkSparse(spec));
  if (seq->busy) return busy("the sequence is being compacted");
  if (tq == 0) return shapeMismatch("sparse selection needs at least one query token");
  const uint32_t H = config_.kvHeads, D = config_.headDim, G = config_.queriesPerHead();
  std::vector<AttentionStream> streams(H);
  std::vector<int32_t> queryPositions(config_.ropeDims != 0 ? static_cast<size_t>(H) * tq : 0);
  for (uint32_t h = 0; h < H; ++h) {
    const Stream& s = seq->stream(layer, H, h);
    if (s.length < static_cast<int32_t>(tq)) {
      return shapeMismatch("sparse selection with " + std::to_string(tq) + " query tokens needs at least that many rows");
    }
    streams[h].kv = StreamView{s.blocks.data(), s.length};
    streams[h].queries = queries + static_cast<uint64_t>(h) * G * D;
    if (config_.ropeDims != 0) {
      // The queries are those of the stream's last tq rows, at those rows' positions (as attention).
      int32_t* qp = queryPositions.data() + static_cast<size_t>(h) * tq;
      KVC_RETURN_IF_ERROR(readPositions(s, static_cast<uint32_t>(s.length) - tq, tq, qp));
      streams[h].queryPositions = qp;
    }
  }
  SparsePlanner planner;
  KVC_RETURN_IF_ERROR(planner.plan(*backend_, pool(), codec(), streams.data(), H, G, tq,
                                   static_cast<uint64_t>(config_.queryHeads) * D, 1.0f / std::sqrt(static_cast<float>(D)), spec,
                                   config_.rope()));
  picked->resize(H);
  bounds->resize(H);
  for (uint32_t h = 0; h < H; ++h) {
    (*picked)[h] = planner.picked(h);
    (*bounds)[h] = planner.bounds(h);
  }
  return Status::ok();
}

Status Cache::checkSparse(const SparseSpec& spec) const {
  if (spec.tokens == 0) return Status::ok();
  if (layout_.summaryBytes == 0) {
    return invalidArgument("sparse attention needs key summaries: create the cache with keySummaries: true");
  }
  return Status::ok();
}

}  // namespace kvc
