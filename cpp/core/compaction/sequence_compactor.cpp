// See sequence_compactor.h.
#include "sequence_compactor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "../cache.h"

namespace kvc::compaction {

namespace {

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

uint32_t protectedCount(uint32_t T, uint32_t sinks, uint32_t recent) {
  return std::min<uint32_t>(T, std::min(sinks, T) + std::min(recent, T));
}

// Rows to keep for a stream of T rows (may exceed T: the caller skips such streams).
uint32_t targetFor(const SequenceRequest& r, uint32_t T) {
  if (r.online) {
    const uint32_t p = protectedCount(T, r.sinks, r.recent);
    return p + static_cast<uint32_t>(std::ceil(r.ratio * static_cast<double>(T - p)));
  }
  if (r.ratio > 0.0) return std::max<uint32_t>(1, static_cast<uint32_t>(std::ceil(r.ratio * static_cast<double>(T) - 1e-9)));
  return std::max<uint32_t>(1, r.targetTokens);
}

// The query vectors of kv head `head` in a layer's [n, queryHeads, D] array, pooled over the
// GQA group: n × g vectors of D.
void pooledQueries(const std::vector<float>& all, const CacheConfig& c, uint32_t head, std::vector<float>* out) {
  const uint32_t D = c.headDim, g = c.queriesPerHead();
  const size_t tokenStride = static_cast<size_t>(c.queryHeads) * D;
  const size_t n = all.size() / tokenStride;
  out->resize(n * g * D);
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(out->data() + i * g * D, all.data() + i * tokenStride + static_cast<size_t>(head) * g * D, 4ull * g * D);
  }
}

// Option checks (the backend checks again; these make a bad request fail before any work).
Status validateOptions(const Options& o) {
  if (!(o.ridge >= 0.0f) || !std::isfinite(o.ridge)) return invalidArgument("compaction: ridge must be finite and >= 0");
  if (!(o.minWeight > 0.0f) || !(o.maxWeight >= o.minWeight) || !std::isfinite(o.maxWeight))
    return invalidArgument("compaction: need 0 < minWeight <= maxWeight < inf");
  return Status::ok();
}

// Pooled given queries of a rope cache rotated by their tokens' positions: the caller's for
// the layer, or the layer's next position for every token (SequenceRequest::queryPositions).
void rotateGiven(const RopeStage& stage, const CacheConfig& c, const std::vector<std::vector<int32_t>>& positions,
                 uint32_t layer, int32_t nextPosition, std::vector<float>* pooled) {
  const uint32_t g = c.queriesPerHead(), n = static_cast<uint32_t>(pooled->size() / c.headDim);
  std::vector<int32_t> at;
  const int32_t* p;
  if (layer < positions.size() && !positions[layer].empty()) {
    p = positions[layer].data();
  } else {
    at.assign(n / g, nextPosition);
    p = at.data();
  }
  stage.rotate(pooled->data(), n, g, p);
}

// The reference queries of one stream (host memory, owned by the request or the stream):
// the caller's for this layer, else the recorded reservoir, else none (the backend then
// uses a subsample of the stream's keys). With rope (plan.rope) they are copied into
// `pooled` and rotated at their positions (rope_stage.h).
Status chooseQueries(const CacheConfig& c, const SequenceRequest& r, const SequencePlan& plan, const Stream& s, StreamPlan& sp,
                     std::vector<float>* pooled, CompactionStreamInput* in) {
  // Given queries are checked to be headDim wide; a low-rank log holds projected ones, except
  // with rope (whole queries: lowrank.cpp).
  const uint32_t D = c.ropeDims != 0 ? c.headDim : c.storedDim();
  const bool given = r.querySource == QuerySource::kGiven && sp.layer < r.queries.size() && !r.queries[sp.layer].empty();
  if (given) {
    pooledQueries(r.queries[sp.layer], c, sp.head, pooled);
    if (plan.rope) rotateGiven(*plan.rope, c, r.queryPositions, sp.layer, plan.sequence->nextPosition[sp.layer], pooled);
    in->queries = pooled->data();
    in->n = static_cast<uint32_t>(pooled->size() / D);
    sp.querySource = QuerySource::kGiven;
  } else if (r.querySource != QuerySource::kKeys && !s.queries.reservoir.empty()) {
    in->queries = s.queries.reservoir.data();
    in->n = static_cast<uint32_t>(s.queries.reservoir.size() / D);
    if (plan.rope) {
      if (s.queries.reservoirPositions.size() != in->n) return internalError("the query log of a rope cache has no positions");
      pooled->assign(s.queries.reservoir.begin(), s.queries.reservoir.end());
      plan.rope->rotate(pooled->data(), in->n, 1, s.queries.reservoirPositions.data());
      in->queries = pooled->data();
    }
    sp.querySource = QuerySource::kRecorded;
  } else {
    in->queries = nullptr;
    in->n = 0;
    sp.querySource = QuerySource::kKeys;  // with rope: the staged keys, each rotated at its own position
  }
  in->keyQueries = r.maxKeyQueries;
  return Status::ok();
}

}  // namespace

Status planCompaction(Cache& cache, uint64_t id, const SequenceRequest& r, SequencePlan* plan) {
  // Low-rank streams still calibrating are fitted first: compaction works on stored rows
  // (keys and values fitted in coefficient space, see lowrank.cpp; values kept unprojected,
  // value rank = headDim, are fitted in their own space; the value fit's width is the value
  // rows' own, cpu/compaction/compaction.h).
  if (cache.sequence(id) && !cache.sequence(id)->busy) KVC_RETURN_IF_ERROR(cache.finishCalibration(id));
  const CacheConfig& c = cache.config();
  const Sequence* seq = cache.sequence(id);
  if (!seq) return Status(StatusCode::kDisposed, "the sequence has been freed");
  if (seq->busy) return busy("the sequence is being compacted");
  if (!(r.ratio >= 0.0 && r.ratio <= 1.0)) return invalidArgument("ratio must be in (0, 1]");
  if (r.ratio == 0.0 && r.targetTokens == 0) return invalidArgument("either ratio or targetTokens must be given");
  if (r.online && (r.ratio <= 0.0 || r.ratio >= 1.0)) return invalidArgument("online compaction needs a ratio in (0, 1)");
  if (r.threads == 0) return invalidArgument("threads must be >= 1");
  for (uint32_t l : r.layers)
    if (l >= c.layers) return invalidArgument("layers: " + std::to_string(l) + " is out of range [0, " + std::to_string(c.layers) + ")");
  for (uint32_t h : r.heads)
    if (h >= c.kvHeads) return invalidArgument("heads: " + std::to_string(h) + " is out of range [0, " + std::to_string(c.kvHeads) + ")");
  auto checkArrays = [&](const std::vector<std::vector<float>>& a, const char* name) -> Status {
    if (a.empty()) return Status::ok();
    if (a.size() != c.layers) return invalidArgument(std::string(name) + " must hold one array per layer (" + std::to_string(c.layers) + ")");
    const size_t tokenElems = static_cast<size_t>(c.queryHeads) * c.headDim;
    for (size_t l = 0; l < a.size(); ++l) {
      if (a[l].size() % tokenElems != 0)
        return shapeMismatch(std::string(name) + "[" + std::to_string(l) + "] must hold n × queryHeads × headDim = n × " +
                             std::to_string(tokenElems) + " elements, got " + std::to_string(a[l].size()));
    }
    return Status::ok();
  };
  // A low-rank log holds projected queries (q . B c = B^T q . c); given ones would need the
  // same projection. With rope the log and given queries are whole (rope_stage.h).
  if (c.lowRank() && c.ropeDims == 0 && (!r.queries.empty() || !r.heldOut.empty())) {
    return unsupported("compaction of a lowRank cache takes its reference queries from the recorded log, not given queries");
  }
  KVC_RETURN_IF_ERROR(checkArrays(r.queries, "queries"));
  KVC_RETURN_IF_ERROR(checkArrays(r.heldOut, "heldOutQueries"));
  auto checkPositions = [&](const std::vector<std::vector<int32_t>>& p, const std::vector<std::vector<float>>& a,
                            const char* name, const char* arrays) -> Status {
    if (p.empty()) return Status::ok();
    if (c.ropeDims == 0) {
      return invalidArgument(std::string(name) + " needs a cache with the rope option (keys before RoPE): post-RoPE queries carry their positions");
    }
    if (p.size() != c.layers) return invalidArgument(std::string(name) + " must hold one array per layer (" + std::to_string(c.layers) + ")");
    const size_t tokenElems = static_cast<size_t>(c.queryHeads) * c.headDim;
    for (size_t l = 0; l < p.size(); ++l) {
      if (p[l].empty()) continue;
      const size_t tokens = l < a.size() ? a[l].size() / tokenElems : 0;
      if (p[l].size() != tokens) {
        return shapeMismatch(std::string(name) + "[" + std::to_string(l) + "] must hold one position per token of " + arrays + "[" +
                             std::to_string(l) + "] (" + std::to_string(tokens) + "), got " + std::to_string(p[l].size()));
      }
      for (size_t i = 0; i < p[l].size(); ++i) {
        if (p[l][i] < 0) return invalidArgument(std::string(name) + "[" + std::to_string(l) + "][" + std::to_string(i) + "] must be >= 0");
      }
    }
    return Status::ok();
  };
  KVC_RETURN_IF_ERROR(checkPositions(r.queryPositions, r.queries, "queryPositions", "queries"));
  KVC_RETURN_IF_ERROR(checkPositions(r.heldOutPositions, r.heldOut, "heldOutPositions", "heldOutQueries"));
  KVC_RETURN_IF_ERROR(validateOptions(r.options));

  std::vector<uint32_t> layers = r.layers, heads = r.heads;
  if (layers.empty())
    for (uint32_t l = 0; l < c.layers; ++l) layers.push_back(l);
  if (heads.empty())
    for (uint32_t h = 0; h < c.kvHeads; ++h) heads.push_back(h);
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  std::sort(heads.begin(), heads.end());
  heads.erase(std::unique(heads.begin(), heads.end()), heads.end());

  plan->id = id;
  plan->sequence = seq;
  plan->streams.clear();
  for (uint32_t l : layers) {
    for (uint32_t h : heads) {
      const Stream& s = seq->stream(l, c.kvHeads, h);
      const uint32_t T = static_cast<uint32_t>(s.length);
      if (T == 0) continue;
      if (r.online && T <= r.maxRows) continue;
      const uint32_t target = targetFor(r, T);
      // An offline target of at least T still runs (it keeps every row and reports the
      // diagnostics); online streams that cannot shrink are left alone.
      if (r.online && target >= T) continue;
      StreamPlan sp;
      sp.layer = l;
      sp.head = h;
      sp.rowsBefore = T;
      sp.target = std::min(target, T);
      plan->streams.push_back(std::move(sp));
    }
  }
  if (c.ropeDims != 0 && !plan->streams.empty()) {
    // Attention Matching fits logits q . k; with keys before RoPE those are rot(q, pq) .
    // rot(k, pk): the numerics run on a post-RoPE copy of the planned streams (rope_stage.h).
    std::vector<uint8_t> planned(seq->streams.size(), 0);
    for (const StreamPlan& sp : plan->streams) planned[sp.layer * c.kvHeads + sp.head] = 1;
    const auto t0 = std::chrono::steady_clock::now();
    plan->rope = std::make_unique<RopeStage>();
    KVC_RETURN_IF_ERROR(plan->rope->build(cache, *seq, planned));
    plan->sequence = &plan->rope->sequence();
    plan->secondsRead += secondsSince(t0);  // staging reads and rotates every planned row
  }
  if (c.tiered() && !plan->streams.empty()) {
    // The numerics read a stream as one run of one format: they run on a staged copy of the
    // planned streams (aged rows in tier 0's format), and apply re-tiers the result.
    std::vector<uint8_t> planned(seq->streams.size(), 0);
    for (const StreamPlan& sp : plan->streams) planned[sp.layer * c.kvHeads + sp.head] = 1;
    plan->stage = std::make_unique<TierStage>();
    KVC_RETURN_IF_ERROR(plan->stage->build(cache, *seq, planned));
    plan->sequence = &plan->stage->sequence();
  }
  return Status::ok();
}

Status computeCompaction(Cache& cache, const SequenceRequest& r, SequencePlan* plan,
                         const std::function<void(double)>& progress) {
  const Sequence* seq = plan->sequence;
  if (!seq) return internalError("computeCompaction needs a plan made by planCompaction");
  const CacheConfig& c = cache.config();
  const size_t total = plan->streams.size();
  plan->fits.clear();
  if (total == 0) {
    if (progress) progress(1.0);
    return Status::ok();
  }
  const PoolView pool = plan->rope ? plan->rope->pool() : cache.pool();
  const RowCodec codec = plan->rope ? plan->rope->codec() : cache.codec();
  const size_t batch = std::max<uint32_t>(1, cache.backend().compactionBatchSize(r.threads));
  std::vector<CompactionStreamInput> inputs(batch);
  std::vector<CompactionStreamReport> reports(batch);
  std::vector<std::vector<float>> pooled(batch);  // given queries, pooled over the GQA group
  CompactionControl control;
  control.threads = r.threads;
  control.cancel = cache.cancelFlag();
  for (size_t b0 = 0; b0 < total; b0 += batch) {
    if (cache.cancelRequested()) {
      return Status(StatusCode::kDisposed, "the cache was disposed while the compaction ran; nothing was applied");
    }
    if (r.abort && r.abort->load(std::memory_order_acquire)) return aborted("the compaction was aborted; nothing was applied");
    const size_t count = std::min(batch, total - b0);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::vector<float>> heldOut(count);
    for (size_t i = 0; i < count; ++i) {
      StreamPlan& sp = plan->streams[b0 + i];
      const Stream& s = seq->stream(sp.layer, c.kvHeads, sp.head);
      CompactionStreamInput& in = inputs[i];
      in = CompactionStreamInput();
      in.stream = StreamView{s.blocks.data(), s.length};
      in.target = sp.target;
      in.sinks = r.sinks;
      in.recent = r.recent;
      KVC_RETURN_IF_ERROR(chooseQueries(c, r, *plan, s, sp, &pooled[i], &in));
      if (sp.layer < r.heldOut.size() && !r.heldOut[sp.layer].empty()) {
        pooledQueries(r.heldOut[sp.layer], c, sp.head, &heldOut[i]);
        if (plan->rope) rotateGiven(*plan->rope, c, r.heldOutPositions, sp.layer, seq->nextPosition[sp.layer], &heldOut[i]);
        in.heldOut = heldOut[i].data();
        in.nHeldOut = static_cast<uint32_t>(heldOut[i].size() / c.headDim);
      }
    }
    plan->secondsRead += secondsSince(t0);
    std::unique_ptr<CompactionFit> fit;
    Status status = cache.mutableBackend().compactStreams(pool, codec, inputs.data(),
                                                          static_cast<uint32_t>(count), r.options, control, reports.data(), &fit);
    if (!status.isOk()) {
      if (cache.cancelRequested()) {
        return Status(StatusCode::kDisposed, "the cache was disposed while the compaction ran; nothing was applied");
      }
      const StreamPlan& sp = plan->streams[b0];
      return Status(status.code(), "compaction of layer " + std::to_string(sp.layer) + " (batch starting at kv head " +
                                       std::to_string(sp.head) + "): " + status.message());
    }
    if (!fit) return internalError("compactStreams returned no fit");
    for (size_t i = 0; i < count; ++i) {
      StreamPlan& sp = plan->streams[b0 + i];
      sp.result = std::move(reports[i]);
      sp.queryCount = sp.result.queryCount;
      sp.fit = static_cast<uint32_t>(plan->fits.size());
      sp.fitIndex = static_cast<uint32_t>(i);
      plan->secondsRead += sp.result.secondsRead;
    }
    plan->fits.push_back(std::move(fit));
    if (progress) progress(static_cast<double>(b0 + count) / static_cast<double>(total));
  }
  return Status::ok();
}

Status applyCompaction(Cache& cache, SequencePlan* plan) {
  const auto t0 = std::chrono::steady_clock::now();
  // Rope: the fit is held by the backend, the stage is no longer read. Its blocks go back
  // first (room for the gather); the kept rows are the real streams' stored, pre-RoPE rows,
  // with their positions, and the fitted values are in the stored value space (coefficients
  // of a low-rank stream), so the steps below are those of any cache.
  if (plan->rope) {
    plan->rope.reset();
    plan->sequence = cache.sequence(plan->id);
  }
  plan->blocksBefore = cache.stats().blocksUsed;
  // The stage's own blocks (aged rows in tier 0's format) are not the sequence's.
  if (plan->stage) {
    uint64_t own = plan->stage->blocks();
    const Sequence* real = cache.sequence(plan->id);
    for (size_t i = 0; real && i < real->streams.size(); ++i) {
      if (plan->stage->sequence().streams[i].length != 0) own -= real->streams[i].blocks.size() - cache.agedBlocks(real->streams[i]);
    }
    plan->blocksBefore -= std::min<uint64_t>(own, plan->blocksBefore);
  }
  if (plan->streams.empty()) {
    plan->blocksAfter = plan->blocksBefore;
    return Status::ok();
  }
  std::vector<KeepSet> sets;
  sets.reserve(plan->streams.size());
  for (const StreamPlan& sp : plan->streams) {
    if (sp.fit >= plan->fits.size() || !plan->fits[sp.fit]) return internalError("applyCompaction needs a computed plan");
    KeepSet k;
    k.layer = sp.layer;
    k.head = sp.head;
    k.rows = sp.result.keep.data();
    k.count = static_cast<uint32_t>(sp.result.keep.size());
    sets.push_back(k);
  }
  // Gather the kept rows into blocks no visible stream reads, re-encode the fitted rows
  // there (where the backend computed them), and only then swap the block tables: a failure
  // at any step leaves the sequence exactly as it was (the transaction's destructor aborts).
  auto fit = [&](const KeepRowsTxn& txn) -> Status {
    for (uint32_t i = 0; i < txn.size(); ++i) {
      const StreamPlan& sp = plan->streams[i];
      KVC_RETURN_IF_ERROR(
          cache.mutableBackend().applyCompactionFit(cache.pool(), cache.codec(), *plan->fits[sp.fit], sp.fitIndex, txn.stream(i)));
    }
    return Status::ok();
  };
  if (plan->stage) {
    // Tiered: the fitted rows are written into the staged streams (tier 0's format), then
    // the lowest tier takes the older rows (cache.h, keepRowsTiered).
    KVC_RETURN_IF_ERROR(cache.keepRowsTiered(plan->id, *plan->stage, sets.data(), static_cast<uint32_t>(sets.size()),
                                             KeepRowsMode::kRewrite, fit));
    plan->stage.reset();
    plan->sequence = nullptr;
    plan->blocksAfter = cache.stats().blocksUsed;
    plan->secondsApply = secondsSince(t0);
    return Status::ok();
  }
  KeepRowsTxn txn;
  KVC_RETURN_IF_ERROR(cache.prepareKeepRows(plan->id, sets.data(), static_cast<uint32_t>(sets.size()),
                                            KeepRowsMode::kRewrite, &txn));
  const Status status = fit(txn);
  if (!status.isOk()) return txn.abortWith(status);
  KVC_RETURN_IF_ERROR(txn.refreshSummaries());  // the fitted beta enters the summaries' maxBeta
  txn.commit();
  plan->blocksAfter = cache.stats().blocksUsed;
  plan->secondsApply = secondsSince(t0);
  return Status::ok();
}

}  // namespace kvc::compaction
