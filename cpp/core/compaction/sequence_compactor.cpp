// See sequence_compactor.h.
#include "sequence_compactor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "../../cpu/thread_pool.h"

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

// Everything compact() reads for one stream, owned.
struct StreamInput {
  std::vector<float> keys, values, beta, queries, heldOut;
  std::vector<uint8_t> protectedRows;
  uint32_t n = 0, nHeldOut = 0;
  size_t capacityBytes() const {
    return 4 * (keys.capacity() + values.capacity() + beta.capacity() + queries.capacity() + heldOut.capacity()) +
           protectedRows.capacity();
  }
};

// Input buffers kept between calls (the next call may run on another worker thread): fresh
// multi-MB buffers cost a page fault per 4 KiB on first touch, which was most of the read time.
// A set is kept only while it stays below kMaxKeptInputBytes.
constexpr size_t kMaxKeptInputBytes = size_t(64) << 20;
constexpr size_t kMaxKeptInputSets = 4;
std::mutex keptInputsMutex;
std::vector<std::vector<StreamInput>>& keptInputs() {
  static auto* sets = new std::vector<std::vector<StreamInput>>();  // never destroyed
  return *sets;
}

class InputLease {
 public:
  explicit InputLease(size_t count) {
    {
      std::lock_guard<std::mutex> lock(keptInputsMutex);
      auto& kept = keptInputs();
      if (!kept.empty()) {
        inputs_ = std::move(kept.back());
        kept.pop_back();
      }
    }
    inputs_.resize(count);
  }
  ~InputLease() {
    size_t bytes = 0;
    for (const StreamInput& in : inputs_) bytes += in.capacityBytes();
    if (bytes > kMaxKeptInputBytes) return;
    try {
      std::lock_guard<std::mutex> lock(keptInputsMutex);
      auto& kept = keptInputs();
      if (kept.size() < kMaxKeptInputSets) kept.push_back(std::move(inputs_));
    } catch (...) {
    }
  }
  InputLease(const InputLease&) = delete;
  InputLease& operator=(const InputLease&) = delete;
  std::vector<StreamInput>& inputs() { return inputs_; }

 private:
  std::vector<StreamInput> inputs_;
};

Status gatherInput(Cache& cache, const SequenceRequest& r, const Stream& s, StreamPlan& sp, StreamInput* in) {
  const CacheConfig& c = cache.config();
  const uint32_t T = sp.rowsBefore, D = c.headDim;
  in->keys.resize(static_cast<size_t>(T) * D);
  in->values.resize(static_cast<size_t>(T) * D);
  in->beta.resize(T);
  StreamView view{s.blocks.data(), s.length};
  KVC_RETURN_IF_ERROR(cache.mutableBackend().readRows(cache.pool(), cache.codec(), view, 0, T, in->keys.data(),
                                                      in->values.data(), in->beta.data(), nullptr));
  in->protectedRows.assign(T, 0);
  const uint32_t sinks = std::min(r.sinks, T), recent = std::min(r.recent, T);
  for (uint32_t j = 0; j < sinks; ++j) in->protectedRows[j] = 1;
  for (uint32_t j = T - recent; j < T; ++j) in->protectedRows[j] = 1;

  const bool given = r.querySource == QuerySource::kGiven && sp.layer < r.queries.size() && !r.queries[sp.layer].empty();
  if (given) {
    pooledQueries(r.queries[sp.layer], c, sp.head, &in->queries);
    sp.querySource = QuerySource::kGiven;
  } else if (r.querySource != QuerySource::kKeys && !s.queries.reservoir.empty()) {
    in->queries = s.queries.reservoir;
    sp.querySource = QuerySource::kRecorded;
  } else {
    // Keys as proxies of the queries: a uniform subsample (every stride-th row).
    const uint32_t m = std::min(T, std::max<uint32_t>(1, r.maxKeyQueries));
    in->queries.resize(static_cast<size_t>(m) * D);
    for (uint32_t i = 0; i < m; ++i) {
      const uint64_t row = static_cast<uint64_t>(i) * T / m;
      std::memcpy(in->queries.data() + static_cast<size_t>(i) * D, in->keys.data() + row * D, 4ull * D);
    }
    sp.querySource = QuerySource::kKeys;
  }
  in->n = static_cast<uint32_t>(in->queries.size() / D);
  in->heldOut.clear();
  in->nHeldOut = 0;
  if (sp.layer < r.heldOut.size() && !r.heldOut[sp.layer].empty()) {
    pooledQueries(r.heldOut[sp.layer], c, sp.head, &in->heldOut);
    in->nHeldOut = static_cast<uint32_t>(in->heldOut.size() / D);
  }
  sp.queryCount = in->n;
  return Status::ok();
}

}  // namespace

Status planCompaction(Cache& cache, uint64_t id, const SequenceRequest& r, SequencePlan* plan) {
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
  KVC_RETURN_IF_ERROR(checkArrays(r.queries, "queries"));
  KVC_RETURN_IF_ERROR(checkArrays(r.heldOut, "heldOutQueries"));
  Options probeOptions = r.options;
  KVC_RETURN_IF_ERROR([&]() -> Status {
    // The core checks options on a problem; a one-row dummy exercises every option check.
    const float one[1] = {1.0f};
    Problem p;
    p.keys = p.values = p.queries = one;
    p.T = p.D = p.n = p.target = 1;
    return validate(p, probeOptions);
  }());

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
  if (total == 0) {
    if (progress) progress(1.0);
    return Status::ok();
  }
  std::unique_ptr<cpu::ThreadPool> threads;
  KVC_RETURN_IF_ERROR(cpu::ThreadPool::create(r.threads, &threads));
  cpu::ThreadPool& pool = *threads;
  // Batches of 2 streams per thread: enough to balance the threads, small enough that the
  // dequantized inputs (2 × T × D floats per stream) stay modest for long contexts.
  const size_t batch = std::max<size_t>(1, 2 * static_cast<size_t>(r.threads));
  InputLease lease(batch);
  std::vector<StreamInput>& inputs = lease.inputs();
  std::vector<Problem> problems(batch);
  std::vector<Result> results(batch);
  for (size_t b0 = 0; b0 < total; b0 += batch) {
    if (cache.cancelRequested()) {
      return Status(StatusCode::kDisposed, "the cache was disposed while the compaction ran; nothing was applied");
    }
    if (r.abort && r.abort->load(std::memory_order_acquire)) return aborted("the compaction was aborted; nothing was applied");
    const size_t count = std::min(batch, total - b0);
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < count; ++i) {
      StreamPlan& sp = plan->streams[b0 + i];
      const Stream& s = seq->stream(sp.layer, c.kvHeads, sp.head);
      StreamInput& in = inputs[i];
      KVC_RETURN_IF_ERROR(gatherInput(cache, r, s, sp, &in));
      Problem& p = problems[i];
      p = Problem();
      p.keys = in.keys.data();
      p.values = in.values.data();
      p.bias = in.beta.data();
      p.protectedRows = in.protectedRows.data();
      p.T = sp.rowsBefore;
      p.D = c.headDim;
      p.queries = in.queries.data();
      p.n = in.n;
      p.heldOutQueries = in.nHeldOut ? in.heldOut.data() : nullptr;
      p.nHeldOut = in.nHeldOut;
      p.target = sp.target;
      results[i] = Result();
    }
    plan->secondsRead += secondsSince(t0);
    Status status = compactBatch(problems.data(), count, r.options, pool, results.data());
    if (!status.isOk()) {
      const StreamPlan& sp = plan->streams[b0];
      return Status(status.code(), "compaction of layer " + std::to_string(sp.layer) + " (batch starting at kv head " +
                                       std::to_string(sp.head) + "): " + status.message());
    }
    for (size_t i = 0; i < count; ++i) {
      StreamPlan& sp = plan->streams[b0 + i];
      const StreamInput& in = inputs[i];
      Result& res = results[i];
      const uint32_t D = c.headDim;
      sp.changed.assign(res.keep.size(), 0);
      for (size_t j = 0; j < res.keep.size(); ++j) {
        const size_t row = static_cast<size_t>(res.keep[j]);
        const bool same = std::memcmp(&res.beta[j], &in.beta[row], 4) == 0 &&
                          std::memcmp(res.values.data() + j * D, in.values.data() + row * D, 4ull * D) == 0;
        sp.changed[j] = same ? 0 : 1;
      }
      sp.result = std::move(res);
    }
    if (progress) progress(static_cast<double>(b0 + count) / static_cast<double>(total));
  }
  return Status::ok();
}

Status applyCompaction(Cache& cache, SequencePlan* plan) {
  const auto t0 = std::chrono::steady_clock::now();
  const CacheConfig& c = cache.config();
  plan->blocksBefore = cache.stats().blocksUsed;
  if (plan->streams.empty()) {
    plan->blocksAfter = plan->blocksBefore;
    return Status::ok();
  }
  std::vector<KeepSet> sets;
  sets.reserve(plan->streams.size());
  for (const StreamPlan& sp : plan->streams) {
    KeepSet k;
    k.layer = sp.layer;
    k.head = sp.head;
    k.rows = sp.result.keep.data();
    k.count = static_cast<uint32_t>(sp.result.keep.size());
    sets.push_back(k);
  }
  // Gather the kept rows into blocks no visible stream reads, re-encode the fitted rows
  // there, and only then swap the block tables: a failure at any step leaves the sequence
  // exactly as it was (the transaction's destructor aborts).
  KeepRowsTxn txn;
  KVC_RETURN_IF_ERROR(cache.prepareKeepRows(plan->id, sets.data(), static_cast<uint32_t>(sets.size()),
                                            KeepRowsMode::kRewrite, &txn));
  const uint32_t D = c.headDim;
  for (uint32_t i = 0; i < txn.size(); ++i) {
    const StreamPlan& sp = plan->streams[i];
    const StreamView view = txn.stream(i);
    const uint32_t t = static_cast<uint32_t>(sp.changed.size());
    for (uint32_t j = 0; j < t;) {
      if (!sp.changed[j]) {
        ++j;
        continue;
      }
      uint32_t end = j;
      while (end < t && sp.changed[end]) ++end;
      const Status status = cache.mutableBackend().rewriteRows(cache.pool(), cache.codec(), view, j, end - j,
                                                               sp.result.values.data() + static_cast<size_t>(j) * D,
                                                               sp.result.beta.data() + j);
      if (!status.isOk()) return txn.abortWith(status);
      j = end;
    }
  }
  txn.commit();
  plan->blocksAfter = cache.stats().blocksUsed;
  plan->secondsApply = secondsSince(t0);
  return Status::ok();
}

}  // namespace kvc::compaction
