// Precision tiers in the cache (tier_layout.h, ARCHITECTURE §9): aging of whole blocks into
// the next tier, attention over a stream's runs of same-format blocks, reads across runs and
// truncation plans. Every backend call sees one run through that tier's PoolView and
// RowCodec, so the backends and their kernels know nothing of tiers.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "../cache.h"

namespace kvc {

RowCodec Cache::tierCodec(uint32_t tier) const {
  RowCodec c = codec();
  c.keyStorage = tiers_[tier].keys;
  c.valueStorage = tiers_[tier].values;
  return c;
}

uint32_t Cache::agedBlocks(const Stream& s) const {
  uint32_t n = 0;
  for (size_t k = 1; k < s.tierBlocks.size(); ++k) n += s.tierBlocks[k];
  return n;
}

int32_t Cache::agedRows(const Stream& s) const {
  int64_t n = 0;
  for (size_t k = 1; k < s.tierBlocks.size(); ++k) n += static_cast<int64_t>(s.tierBlocks[k]) * tiers_[k].rowsPerBlock;
  return static_cast<int32_t>(n);
}

void Cache::tierRuns(const Stream& s, std::vector<TierRun>* runs) const {
  runs->clear();
  uint32_t block = 0;
  int32_t row = 0;
  for (size_t k = s.tierBlocks.size(); k-- > 1;) {
    if (s.tierBlocks[k] == 0) continue;
    TierRun run;
    run.tier = static_cast<uint32_t>(k);
    run.firstBlock = block;
    run.blocks = s.tierBlocks[k];
    run.firstRow = row;
    run.rows = static_cast<int32_t>(static_cast<int64_t>(run.blocks) * tiers_[k].rowsPerBlock);
    runs->push_back(run);
    block += run.blocks;
    row += run.rows;
  }
  if (s.length > row) {
    TierRun run;
    run.tier = 0;
    run.firstBlock = block;
    run.blocks = static_cast<uint32_t>(s.blocks.size()) - block;
    run.firstRow = row;
    run.rows = s.length - row;
    runs->push_back(run);
  }
}

Status Cache::readStreamRows(const Stream& s, uint32_t start, uint32_t count, float* keys, float* values, float* beta,
                             int32_t* positions) const {
  if (!config_.tiered()) {
    StreamView view{s.blocks.data(), s.length};
    return backend_->readRows(pool(), codec(), view, start, count, keys, values, beta, positions);
  }
  std::vector<TierRun> runs;
  tierRuns(s, &runs);
  const uint64_t D = config_.headDim;
  const int64_t end = static_cast<int64_t>(start) + count;
  for (const TierRun& run : runs) {
    const int64_t a = std::max<int64_t>(start, run.firstRow), b = std::min<int64_t>(end, run.firstRow + run.rows);
    if (a >= b) continue;
    const uint64_t o = static_cast<uint64_t>(a - start);
    StreamView view{s.blocks.data() + run.firstBlock, run.rows};
    KVC_RETURN_IF_ERROR(backend_->readRows(tierPool(run.tier), tierCodec(run.tier), view, static_cast<uint32_t>(a - run.firstRow),
                                           static_cast<uint32_t>(b - a), keys ? keys + o * D : nullptr,
                                           values ? values + o * D : nullptr, beta ? beta + o : nullptr,
                                           positions ? positions + o : nullptr));
  }
  return Status::ok();
}

void Cache::ageStreams(Sequence* seq, uint32_t layer) {
  const uint32_t heads = config_.kvHeads;
  const uint32_t D = config_.headDim;
  for (uint32_t h = 0; h < heads; ++h) {
    Stream& s = seq->stream(layer, heads, h);
    if (s.tierBlocks.size() != tiers_.size()) s.tierBlocks.resize(tiers_.size(), 0);
    for (uint32_t k = 0; k + 1 < tiers_.size(); ++k) {
      const TierFormat& from = tiers_[k];
      const TierFormat& to = tiers_[k + 1];
      // The tier's run: rows [first, first + rows) in blocks [firstBlock, ...).
      uint32_t firstBlock = 0;
      for (size_t j = k + 1; j < tiers_.size(); ++j) firstBlock += s.tierBlocks[j];
      int64_t first = 0;
      for (size_t j = k + 1; j < tiers_.size(); ++j) first += static_cast<int64_t>(s.tierBlocks[j]) * tiers_[j].rowsPerBlock;
      const int64_t rows = k == 0 ? s.length - first : static_cast<int64_t>(s.tierBlocks[k]) * from.rowsPerBlock;
      // Whole blocks of the next tier whose rows all left this tier's window.
      const int64_t spare = rows - static_cast<int64_t>(from.windowRows);
      const uint32_t n = spare >= static_cast<int64_t>(to.rowsPerBlock) ? static_cast<uint32_t>(spare / to.rowsPerBlock) : 0;
      if (n == 0) continue;
      const uint32_t moved = n * to.rowsPerBlock;
      const uint32_t oldBlocks = moved / from.rowsPerBlock;
      tierRows_.resize(2ull * moved * D + moved);
      tierPositions_.resize(moved);
      float* keys = tierRows_.data();
      float* values = keys + static_cast<uint64_t>(moved) * D;
      float* beta = values + static_cast<uint64_t>(moved) * D;
      StreamView view{s.blocks.data() + firstBlock, static_cast<int32_t>(rows)};
      if (!backend_->readRows(tierPool(k), tierCodec(k), view, 0, moved, keys, values, beta, tierPositions_.data()).isOk()) return;
      std::vector<int32_t> fresh;
      if (!allocateBlocks(n, &fresh).isOk()) return;
      // The decoded rows are encoded by the next tier's append path: requantized once from
      // their stored form, exactly as if they had been appended in that format.
      if (!writeRowsAt(tierPool(k + 1), tierCodec(k + 1), fresh.data(), moved, keys, values, tierPositions_.data(), beta).isOk()) {
        for (int32_t b : fresh) pool_.release(b);
        return;
      }
      // Commit: the new blocks end the next tier's run, which ends where this run begins.
      for (uint32_t i = 0; i < oldBlocks; ++i) pool_.release(s.blocks[firstBlock + i]);
      s.blocks.erase(s.blocks.begin() + firstBlock, s.blocks.begin() + firstBlock + oldBlocks);
      s.blocks.insert(s.blocks.begin() + firstBlock, fresh.begin(), fresh.end());
      s.tierBlocks[k + 1] += n;
      if (k > 0) s.tierBlocks[k] -= oldBlocks;
    }
  }
}

Status Cache::planTierTruncate(const Stream& s, int32_t newLength, uint32_t* keepBlocks, std::vector<uint32_t>* tierBlocks) const {
  std::vector<TierRun> runs;
  tierRuns(s, &runs);
  *tierBlocks = s.tierBlocks;
  *keepBlocks = 0;
  for (const TierRun& run : runs) {
    const int32_t rpb = static_cast<int32_t>(tiers_[run.tier].rowsPerBlock);
    const int32_t keep = std::max(0, std::min(run.rows, newLength - run.firstRow));
    if (run.tier != 0 && keep % rpb != 0) {
      return unsupported("truncate inside a block of an aged tier (tier " + std::to_string(run.tier) + ", " + std::to_string(rpb) +
                         " rows per block) is not supported: truncate at a multiple of " + std::to_string(rpb) +
                         " rows of the aged part, or within the newest rows");
    }
    const uint32_t blocks = static_cast<uint32_t>((keep + rpb - 1) / rpb);
    if (run.tier != 0) (*tierBlocks)[run.tier] = blocks;
    *keepBlocks += blocks;
  }
  return Status::ok();
}

// Attention over a tiered stream: one backend call per tier over the runs of that tier of
// every stream, each with its own output and log-sum-exp, merged by the log-sum-exp. The
// causal cutoffs are explicit (the positions of the stream's last query rows), since a run
// does not end at the queries. Attention mass per row needs each query's final log-sum-exp,
// which a run's call does not know; with accumulateScores every query vector runs as its own
// attention stream, and its mass is rescaled by exp(lse_run - lse) when merged.
Status Cache::attentionChunkTiered(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1) {
  const uint32_t heads = config_.kvHeads;
  const uint32_t D = config_.headDim;
  const uint32_t g = config_.queriesPerHead();
  const uint32_t tq = t1 - t0;
  const uint32_t M = tq * g;
  const bool split = r.accumulateScores;
  const uint64_t tokenStride = static_cast<uint64_t>(config_.queryHeads) * D;
  const uint64_t seqStride = tokenStride * r.tq;
  const uint32_t streams = count * heads;

  // Per stream: its runs (unit u = a run of a stream), compact queries and cutoffs.
  std::vector<std::vector<TierRun>> runs(streams);
  std::vector<uint32_t> firstUnit(streams + 1, 0);
  tierQueries_.resize(static_cast<size_t>(streams) * M * D);
  queryPositionScratch_.resize(static_cast<size_t>(streams) * tq);
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq = sequences_.at(ids[i]).get();
    for (uint32_t h = 0; h < heads; ++h) {
      const uint32_t k = i * heads + h;
      Stream& s = seq->stream(r.layer, heads, h);
      tierRuns(s, &runs[k]);
      firstUnit[k + 1] = firstUnit[k] + static_cast<uint32_t>(runs[k].size());
      for (uint32_t t = 0; t < tq; ++t) {
        std::memcpy(tierQueries_.data() + (static_cast<size_t>(k) * M + t * g) * D,
                    r.queries + i * seqStride + (t0 + t) * tokenStride + static_cast<uint64_t>(h) * g * D, 4ull * g * D);
      }
      KVC_RETURN_IF_ERROR(readStreamRows(s, static_cast<uint32_t>(s.length) - r.tq + t0, tq, nullptr, nullptr, nullptr,
                                         queryPositionScratch_.data() + static_cast<size_t>(k) * tq));
      if (split && s.scores.size() != static_cast<size_t>(s.length)) s.scores.resize(s.length, 0.0f);
    }
  }
  const uint32_t units = firstUnit[streams];
  tierOut_.resize(static_cast<size_t>(units) * M * D);
  tierLse_.resize(static_cast<size_t>(units) * M);
  std::vector<size_t> scoreOffset(split ? static_cast<size_t>(units) * M : 0);
  if (split) {
    size_t total = 0;
    for (uint32_t k = 0; k < streams; ++k) {
      for (size_t j = 0; j < runs[k].size(); ++j) {
        for (uint32_t m = 0; m < M; ++m) {
          scoreOffset[(firstUnit[k] + j) * M + m] = total;
          total += static_cast<size_t>(runs[k][j].rows);
        }
      }
    }
    tierScores_.assign(total, 0.0f);
  }

  AttentionParams p;
  p.queriesPerHead = split ? 1 : g;
  p.tq = split ? 1 : tq;
  p.tokenStride = static_cast<uint64_t>(g) * D;
  p.lseTokenStride = g;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  const bool fast = r.precision < 0 ? config_.fastPrecision : r.precision == 1;
  for (uint32_t tier = 0; tier < tiers_.size(); ++tier) {
    attentionScratch_.clear();
    for (uint32_t i = 0; i < count; ++i) {
      Sequence* seq = sequences_.at(ids[i]).get();
      for (uint32_t h = 0; h < heads; ++h) {
        const uint32_t k = i * heads + h;
        const Stream& s = seq->stream(r.layer, heads, h);
        for (size_t j = 0; j < runs[k].size(); ++j) {
          const TierRun& run = runs[k][j];
          if (run.tier != tier) continue;
          const size_t u = firstUnit[k] + j;
          AttentionStream a;
          a.kv.blockTable = s.blocks.data() + run.firstBlock;
          a.kv.length = run.rows;
          for (uint32_t m = 0; m < (split ? M : 1); ++m) {
            a.queryPositions = queryPositionScratch_.data() + static_cast<size_t>(k) * tq + (split ? m / g : 0);
            a.queries = tierQueries_.data() + (static_cast<size_t>(k) * M + m) * D;
            a.out = tierOut_.data() + (u * M + m) * D;
            a.lse = tierLse_.data() + u * M + m;
            if (split) a.scores = tierScores_.data() + scoreOffset[u * M + m];
            attentionScratch_.push_back(a);
          }
        }
      }
    }
    if (attentionScratch_.empty()) continue;
    p.pool = tierPool(tier);
    p.codec = tierCodec(tier);
    p.fast = fast;
    p.streamCount = static_cast<uint32_t>(attentionScratch_.size());
    p.streams = attentionScratch_.data();
    KVC_RETURN_IF_ERROR(backend_->attention(p));
  }

  // Merge the runs of every stream by their log-sum-exp.
  std::vector<float> acc(D), weight;
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq = sequences_.at(ids[i]).get();
    for (uint32_t h = 0; h < heads; ++h) {
      const uint32_t k = i * heads + h;
      Stream& s = seq->stream(r.layer, heads, h);
      const size_t u0 = firstUnit[k], n = runs[k].size();
      weight.resize(n);
      for (uint32_t m = 0; m < M; ++m) {
        float top = -INFINITY;
        for (size_t j = 0; j < n; ++j) top = std::max(top, tierLse_[(u0 + j) * M + m]);
        double sum = 0.0;
        for (size_t j = 0; j < n; ++j) {
          const float l = tierLse_[(u0 + j) * M + m];
          weight[j] = top == -INFINITY || l == -INFINITY ? 0.0f : std::exp(l - top);
          sum += weight[j];
        }
        const float lse = sum > 0.0 ? top + static_cast<float>(std::log(sum)) : -INFINITY;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (size_t j = 0; j < n; ++j) {
          if (weight[j] == 0.0f) continue;
          const float w = static_cast<float>(weight[j] / sum);
          weight[j] = w;
          const float* o = tierOut_.data() + ((u0 + j) * M + m) * D;
          for (uint32_t d = 0; d < D; ++d) acc[d] += w * o[d];
          if (split) {
            const float* mass = tierScores_.data() + scoreOffset[(u0 + j) * M + m];
            float* dst = s.scores.data() + runs[k][j].firstRow;
            for (int32_t row = 0; row < runs[k][j].rows; ++row) dst[row] += w * mass[row];
          }
        }
        const uint32_t t = m / g, gi = m % g;
        float* out = r.out + i * seqStride + (t0 + t) * tokenStride + (static_cast<uint64_t>(h) * g + gi) * D;
        std::memcpy(out, acc.data(), 4ull * D);
        if (r.lse) r.lse[(static_cast<uint64_t>(i) * r.tq + t0 + t) * config_.queryHeads + h * g + gi] = lse;
      }
    }
  }
  return Status::ok();
}

}  // namespace kvc
