// Eviction and compaction of tiered sequences (tier_stage.h): staging a tiered stream as one
// run of tier 0's format, and putting rebuilt staged streams back as tiers. Every step that
// can fail runs against fresh blocks first; the real sequence changes only at the end.
#include <algorithm>
#include <string>

#include "../cache.h"
#include "tier_stage.h"

namespace kvc {

Status TierStage::build(Cache& cache, const Sequence& seq, const std::vector<uint8_t>& streams) {
  reset();
  cache_ = &cache;
  seq_.nextPosition = seq.nextPosition;
  seq_.streams.assign(seq.streams.size(), Stream());
  for (size_t i = 0; i < seq.streams.size(); ++i) {
    if (!streams.empty() && !streams[i]) continue;
    const Status status = cache.stageStream(seq.streams[i], &seq_.streams[i]);
    if (!status.isOk()) {
      reset();
      return status;
    }
  }
  return Status::ok();
}

void TierStage::reset() {
  if (cache_) {
    for (Stream& s : seq_.streams) cache_->releaseStaged(&s);
  }
  cache_ = nullptr;
  seq_ = Sequence();
}

Status Cache::recodeRows(uint32_t from, const StreamView& src, uint32_t start, uint32_t count, uint32_t to, const int32_t* dst) {
  const uint64_t D = config_.headDim;
  const uint32_t rpb = tiers_[to].rowsPerBlock;
  // Whole destination blocks per chunk, so that every chunk starts a block (startRow 0).
  const uint32_t chunk = rpb * std::max<uint32_t>(1, 4096 / rpb);
  std::vector<float> keys, values, beta;
  std::vector<int32_t> positions;
  for (uint32_t c0 = 0; c0 < count; c0 += chunk) {
    const uint32_t n = std::min(chunk, count - c0);
    keys.resize(n * D);
    values.resize(n * D);
    beta.resize(n);
    positions.resize(n);
    KVC_RETURN_IF_ERROR(backend_->readRows(tierPool(from), tierCodec(from), src, start + c0, n, keys.data(), values.data(),
                                           beta.data(), positions.data()));
    KVC_RETURN_IF_ERROR(writeRowsAt(tierPool(to), tierCodec(to), dst + c0 / rpb, n, keys.data(), values.data(), positions.data(),
                                    beta.data()));
  }
  return Status::ok();
}

Status Cache::writeRowsAt(const PoolView& pool, const RowCodec& codec, const int32_t* table, uint32_t n, const float* keys,
                          const float* values, const int32_t* positions, const float* beta) {
  const int32_t startRow = 0;
  AppendParams p;
  p.pool = pool;
  p.codec = codec;
  p.streamCount = 1;
  p.tokens = n;
  p.blockTables = &table;
  p.startRow = &startRow;
  p.inputType = InputType::kF32;
  p.keys = keys;
  p.values = values;
  p.positions = positions;
  p.beta = beta;
  return backend_->append(p);
}

Status Cache::stageStream(const Stream& s, Stream* out) {
  releaseStaged(out);
  const uint32_t B = config_.blockSize;
  const int32_t aged = agedRows(s);  // a multiple of B: every tier's rows per block are
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(static_cast<uint32_t>(aged) / B, &fresh));
  std::vector<TierRun> runs;
  tierRuns(s, &runs);
  for (const TierRun& run : runs) {
    if (run.tier == 0) continue;
    const StreamView view{s.blocks.data() + run.firstBlock, run.rows};
    const Status status = recodeRows(run.tier, view, 0, static_cast<uint32_t>(run.rows), 0, fresh.data() + run.firstRow / B);
    if (!status.isOk()) {
      for (int32_t b : fresh) pool_.release(b);
      return status;
    }
  }
  // Tier 0's blocks are shared, not copied: the retain keeps a rebuild of the staged stream
  // from ever writing into them in place.
  out->blocks = std::move(fresh);
  for (size_t b = agedBlocks(s); b < s.blocks.size(); ++b) {
    pool_.retain(s.blocks[b]);
    out->blocks.push_back(s.blocks[b]);
  }
  out->length = s.length;
  out->scores = s.scores;
  out->queries = s.queries;
  return Status::ok();
}

void Cache::releaseStaged(Stream* s) {
  for (int32_t b : s->blocks) pool_.release(b);
  s->blocks.clear();
  s->length = 0;
}

Status Cache::keepRowsTiered(uint64_t id, TierStage& stage, const KeepSet* sets, uint32_t count, KeepRowsMode mode,
                             const std::function<Status(const KeepRowsTxn&)>& rewrite) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  if (seq->busy) return busy("the sequence is being compacted");
  const uint32_t H = config_.kvHeads, B = config_.blockSize;
  Sequence& staged = stage.sequence();
  if (staged.streams.size() != seq->streams.size()) return internalError("keepRowsTiered: the stage is not of this sequence");
  // Kept rows of the old tier-0 run, per set: they stay in tier 0.
  std::vector<int32_t> top(count, 0);
  for (uint32_t i = 0; i < count; ++i) {
    KVC_RETURN_IF_ERROR(checkLayer(sets[i].layer));
    if (sets[i].head >= H) return invalidArgument("kvHead " + std::to_string(sets[i].head) + " is out of range");
    const Stream& s = seq->stream(sets[i].layer, H, sets[i].head);
    if (staged.stream(sets[i].layer, H, sets[i].head).length != s.length) {
      return internalError("keepRowsTiered: layer " + std::to_string(sets[i].layer) + " kv head " + std::to_string(sets[i].head) +
                           " was not staged");
    }
    const int32_t aged = agedRows(s);
    for (uint32_t j = 0; j < sets[i].count; ++j) top[i] += sets[i].rows[j] >= aged ? 1 : 0;
  }
  {
    KeepRowsTxn txn;
    KVC_RETURN_IF_ERROR(prepareKeepRowsOn(&staged, sets, count, mode, &txn));
    if (rewrite) {
      const Status status = rewrite(txn);
      if (!status.isOk()) return txn.abortWith(status);
    }
    txn.commit();
  }
  // The lowest tier takes the older rows in whole blocks (requantized from the staged rows);
  // the rest, with every kept row of the old tier 0, stays in tier 0's staged blocks.
  const uint32_t L = static_cast<uint32_t>(tiers_.size()) - 1;
  const uint32_t rpb = tiers_[L].rowsPerBlock;
  std::vector<std::vector<int32_t>> low(count);
  auto fail = [&](const Status& status) {
    for (auto& blocks : low)
      for (int32_t b : blocks) pool_.release(b);
    return status;
  };
  for (uint32_t i = 0; i < count; ++i) {
    const Stream& c = staged.stream(sets[i].layer, H, sets[i].head);
    const uint32_t q = static_cast<uint32_t>(c.length - top[i]) / rpb;
    if (q == 0) continue;
    Status status = allocateBlocks(q, &low[i]);
    if (status.isOk()) status = recodeRows(0, StreamView{c.blocks.data(), c.length}, 0, q * rpb, L, low[i].data());
    if (!status.isOk()) return fail(status);
  }
  // Commit (cannot fail). Tier 0 may now hold more than its window: it ages at the next
  // append, as always (aging here could fail and is not part of the transaction).
  for (uint32_t i = 0; i < count; ++i) {
    Stream& s = seq->stream(sets[i].layer, H, sets[i].head);
    Stream& c = staged.stream(sets[i].layer, H, sets[i].head);
    const uint32_t q = static_cast<uint32_t>(low[i].size());
    const uint32_t drop = q * rpb / B;
    for (uint32_t b = 0; b < drop; ++b) pool_.release(c.blocks[b]);
    std::vector<int32_t> table = std::move(low[i]);
    table.insert(table.end(), c.blocks.begin() + drop, c.blocks.end());
    for (int32_t b : s.blocks) pool_.release(b);
    s.blocks = std::move(table);
    s.length = c.length;
    s.tierBlocks.assign(tiers_.size(), 0);
    s.tierBlocks[L] = q;
    if (!s.scores.empty() || !c.scores.empty()) s.scores = std::move(c.scores);
    c.blocks.clear();
    c.length = 0;
    if (!seq->intact.empty()) seq->intact[static_cast<size_t>(&s - seq->streams.data())] = 0;
  }
  return Status::ok();
}

}  // namespace kvc
