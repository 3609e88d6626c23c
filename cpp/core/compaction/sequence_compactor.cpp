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

// The reference queries of one stream (host memory, owned by the request or the stream):
// the caller's for this layer, else the recorded reservoir, else none (the backend then
// uses a subsample of the stream's keys).
void chooseQueries(const CacheConfig& c, const SequenceRequest& r, const Stream& s, StreamPlan& sp,
                   std::vector<float>* pooled, CompactionStreamInput* in) {
  // Given queries are checked to be headDim wide; a low-rank log holds projected ones.
  const uint32_t D = c.storedDim();
  const bool given = r.querySource == QuerySource::kGiven && sp.layer < r.queries.size() && !r.queries[sp.layer].empty();
  if (given) {
    pooledQueries(r.queries[sp.layer], c, sp.head, pooled);
    in->queries = pooled->data();
    in->n = static_cast<uint32_t>(pooled->size() / D);
    sp.querySource = QuerySource::kGiven;
  } else if (r.querySource != QuerySource::kKeys && !s.queries.reservoir.empty()) {
    in->queries = s.queries.reservoir.data();
    in->n = static_cast<uint32_t>(s.queries.reservoir.size() / D);
    sp.querySource = QuerySource::kRecorded;
  } else {
    in->queries = nullptr;
    in->n = 0;
    sp.querySource = QuerySource::kKeys;
  }
  in->keyQueries = r.maxKeyQueries;
}

}  // namespace

Status planCompaction(Cache& cache, uint64_t id, const SequenceRequest& r, SequencePlan* plan) {
  if (cache.config().tiered()) {
    // The compaction numerics read a stream as one run of one format (cpp/core/tiers).
    return unsupported("compaction on a cache with tiers is not supported yet");
  }
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
  // Attention Matching fits logits q.k of reference queries; with pre-RoPE keys those need
  // RoPE by position in the fit, which is not implemented.
  if (c.ropeDims != 0) return unsupported("compaction of a cache with rope (pre-RoPE keys) is not supported yet");
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
  if (c.lowRank() && (!r.queries.empty() || !r.heldOut.empty())) {
    return unsupported("compaction of a lowRank cache takes its reference queries from the recorded log, not given queries");
  }
  KVC_RETURN_IF_ERROR(checkArrays(r.queries, "queries"));
  KVC_RETURN_IF_ERROR(checkArrays(r.heldOut, "heldOutQueries"));
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
      chooseQueries(c, r, s, sp, &pooled[i], &in);
      if (sp.layer < r.heldOut.size() && !r.heldOut[sp.layer].empty()) {
        pooledQueries(r.heldOut[sp.layer], c, sp.head, &heldOut[i]);
        in.heldOut = heldOut[i].data();
        in.nHeldOut = static_cast<uint32_t>(heldOut[i].size() / c.headDim);
      }
    }
    plan->secondsRead += secondsSince(t0);
    std::unique_ptr<CompactionFit> fit;
    Status status = cache.mutableBackend().compactStreams(cache.pool(), cache.codec(), inputs.data(),
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
  plan->blocksBefore = cache.stats().blocksUsed;
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
  KeepRowsTxn txn;
  KVC_RETURN_IF_ERROR(cache.prepareKeepRows(plan->id, sets.data(), static_cast<uint32_t>(sets.size()),
                                            KeepRowsMode::kRewrite, &txn));
  for (uint32_t i = 0; i < txn.size(); ++i) {
    const StreamPlan& sp = plan->streams[i];
    const Status status =
        cache.mutableBackend().applyCompactionFit(cache.pool(), cache.codec(), *plan->fits[sp.fit], sp.fitIndex, txn.stream(i));
    if (!status.isOk()) return txn.abortWith(status);
  }
  txn.commit();
  plan->blocksAfter = cache.stats().blocksUsed;
  plan->secondsApply = secondsSince(t0);
  return Status::ok();
}

}  // namespace kvc::compaction
