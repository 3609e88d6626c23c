// See compact_streams.h.
#include "compact_streams.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <string>

#include "../thread_pool.h"
#include "compaction.h"

namespace kvc::cpu {

namespace {

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Floats per value row (low-rank values may be narrower or wider than the key coefficients).
uint32_t valueDimOf(const RowCodec& codec) { return codec.valueDim ? codec.valueDim : codec.headDim; }

bool cancelled(const CompactionControl& control) {
  return control.cancel && control.cancel->load(std::memory_order_acquire);
}

Status checkInput(const CompactionStreamInput& s, uint32_t i) {
  const std::string where = "stream " + std::to_string(i) + ": ";
  if (s.stream.length <= 0 || !s.stream.blockTable) return invalidArgument(where + "the stream must hold rows");
  const uint32_t T = static_cast<uint32_t>(s.stream.length);
  if (s.target == 0 || s.target > T)
    return invalidArgument(where + "target must be in [1, " + std::to_string(T) + "], got " + std::to_string(s.target));
  if (s.nHeldOut > 0 && !s.heldOut) return invalidArgument(where + "heldOut must hold nHeldOut query vectors");
  return Status::ok();
}

// Reads stream s's rows and builds its problem; queries from the caller or, when there are
// none, a uniform subsample of the keys (every (T/m)-th row).
Status prepare(Backend& rows, const PoolView& pool, const RowCodec& codec, const CompactionStreamInput& s,
               StreamInput* in, compaction::Problem* p, CompactionStreamReport* report) {
  const uint32_t T = static_cast<uint32_t>(s.stream.length), D = codec.headDim;
  in->keys.resize(static_cast<size_t>(T) * D);
  in->values.resize(static_cast<size_t>(T) * valueDimOf(codec));
  in->beta.resize(T);
  KVC_RETURN_IF_ERROR(rows.readRows(pool, codec, s.stream, 0, T, in->keys.data(), in->values.data(), in->beta.data(), nullptr));
  in->protectedRows.assign(T, 0);
  const uint32_t sinks = std::min(s.sinks, T), recent = std::min(s.recent, T);
  for (uint32_t j = 0; j < sinks; ++j) in->protectedRows[j] = 1;
  for (uint32_t j = T - recent; j < T; ++j) in->protectedRows[j] = 1;

  *p = compaction::Problem();
  if (s.queries) {
    p->queries = s.queries;
    p->n = s.n;
    report->queriesFromKeys = false;
  } else {
    const uint32_t m = std::min(T, std::max<uint32_t>(1, s.keyQueries));
    in->keyQueries.resize(static_cast<size_t>(m) * D);
    for (uint32_t i = 0; i < m; ++i) {
      const uint64_t row = static_cast<uint64_t>(i) * T / m;
      std::memcpy(in->keyQueries.data() + static_cast<size_t>(i) * D, in->keys.data() + row * D, 4ull * D);
    }
    p->queries = in->keyQueries.data();
    p->n = m;
    report->queriesFromKeys = true;
  }
  report->queryCount = p->n;
  p->keys = in->keys.data();
  p->values = in->values.data();
  p->bias = in->beta.data();
  p->protectedRows = in->protectedRows.data();
  p->T = T;
  p->D = D;
  p->DV = codec.valueDim;
  p->heldOutQueries = s.nHeldOut ? s.heldOut : nullptr;
  p->nHeldOut = s.nHeldOut;
  p->target = s.target;
  return Status::ok();
}

// Fills the report and the fit of one stream from its result; `changed` marks the kept rows
// whose beta or value differ bit-wise from the row they were kept from (value rows of D floats).
void finish(const StreamInput& in, uint32_t D, compaction::Result&& res, CompactionStreamReport* report,
            CpuCompactionFit::Stream* fit) {
  const size_t t = res.keep.size();
  fit->changed.assign(t, 0);
  uint32_t changed = 0;
  for (size_t j = 0; j < t; ++j) {
    const size_t row = static_cast<size_t>(res.keep[j]);
    const bool same = std::memcmp(&res.beta[j], &in.beta[row], 4) == 0 &&
                      std::memcmp(res.values.data() + j * D, in.values.data() + row * D, 4ull * D) == 0;
    fit->changed[j] = same ? 0 : 1;
    changed += same ? 0 : 1;
  }
  report->changedRows = changed;
  report->outputError = res.outputError;
  report->massError = res.massError;
  report->heldOutOutputError = res.heldOutOutputError;
  report->heldOutMassError = res.heldOutMassError;
  report->ridgeRaises = res.ridgeRaises;
  report->secondsScores = res.secondsScores;
  report->secondsSelect = res.secondsSelect;
  report->secondsNnls = res.secondsNnls;
  report->secondsValues = res.secondsValues;
  report->secondsDiagnostics = res.secondsDiagnostics;
  report->keep = std::move(res.keep);
  fit->beta = std::move(res.beta);
  fit->values = std::move(res.values);
}

// Returns the buffers to the workspace however the call ends.
class InputLease {
 public:
  InputLease(CompactionWorkspace& ws, size_t count) : ws_(ws), inputs_(ws.takeInputs(count)) {}
  ~InputLease() { ws_.putInputs(std::move(inputs_)); }
  InputLease(const InputLease&) = delete;
  InputLease& operator=(const InputLease&) = delete;
  std::vector<StreamInput>& inputs() { return inputs_; }

 private:
  CompactionWorkspace& ws_;
  std::vector<StreamInput> inputs_;
};

Status compactStreamsOrThrow(Backend& rows, CompactionWorkspace& ws, const PoolView& pool, const RowCodec& codec,
                             const CompactionStreamInput* streams, uint32_t count, const compaction::Options& options,
                             const CompactionControl& control, CompactionStreamReport* reports,
                             std::unique_ptr<CompactionFit>* fit) {
  auto out = std::make_unique<CpuCompactionFit>();
  out->streams.resize(count);
  InputLease inputs(ws, count);
  std::vector<compaction::Problem> problems(count);
  std::vector<compaction::Result> results(count);
  for (uint32_t i = 0; i < count; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    reports[i] = CompactionStreamReport();
    KVC_RETURN_IF_ERROR(prepare(rows, pool, codec, streams[i], &inputs.inputs()[i], &problems[i], &reports[i]));
    reports[i].secondsRead = secondsSince(t0);
  }
  if (cancelled(control)) return Status(StatusCode::kDisposed, "compaction cancelled");
  // Threads for this call only: a cache that compacted once keeps no idle threads.
  // A thread that cannot be started (process limit) fails the call with OUT_OF_MEMORY.
  std::unique_ptr<ThreadPool> threads;
  KVC_RETURN_IF_ERROR(ThreadPool::create(control.threads, &threads));
  KVC_RETURN_IF_ERROR(compaction::compactBatch(problems.data(), count, options, *threads, results.data(), &ws.scratch()));
  for (uint32_t i = 0; i < count; ++i)
    finish(inputs.inputs()[i], valueDimOf(codec), std::move(results[i]), &reports[i], &out->streams[i]);
  *fit = std::move(out);
  return Status::ok();
}

}  // namespace

CompactionWorkspace::CompactionWorkspace() = default;
CompactionWorkspace::~CompactionWorkspace() {
  for (KeptInputs& k : inputs_) scratch_.account(-static_cast<int64_t>(k.bytes));
}

void CompactionWorkspace::trim() {
  scratch_.trim();
  std::vector<KeptInputs> drop;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    drop.swap(inputs_);
  }
  for (KeptInputs& k : drop) scratch_.account(-static_cast<int64_t>(k.bytes));
}

std::vector<StreamInput> CompactionWorkspace::takeInputs(size_t count) {
  std::vector<StreamInput> inputs;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!inputs_.empty()) {
      inputs = std::move(inputs_.back().inputs);
      scratch_.account(-static_cast<int64_t>(inputs_.back().bytes));
      inputs_.pop_back();
    }
  }
  inputs.resize(count);
  return inputs;
}

void CompactionWorkspace::putInputs(std::vector<StreamInput> inputs) {
  size_t bytes = 0;
  for (const StreamInput& in : inputs) bytes += in.capacityBytes();
  if (bytes > kMaxKeptInputBytes) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (inputs_.size() >= kMaxKeptInputSets) return;
  try {
    inputs_.push_back(KeptInputs{std::move(inputs), bytes});
    scratch_.account(static_cast<int64_t>(bytes));
  } catch (...) {
    // Not kept: freed on return.
  }
}

uint64_t CpuCompactionFit::bytes() const {
  uint64_t total = 0;
  for (const Stream& s : streams) total += 4 * (s.beta.capacity() + s.values.capacity()) + s.changed.capacity();
  return total;
}

Status compactStreams(Backend& rows, CompactionWorkspace& ws, const PoolView& pool, const RowCodec& codec,
                      const CompactionStreamInput* streams, uint32_t count, const compaction::Options& options,
                      const CompactionControl& control, CompactionStreamReport* reports,
                      std::unique_ptr<CompactionFit>* fit) {
  if (!fit) return invalidArgument("compactStreams: fit must not be null");
  if (count > 0 && (!streams || !reports)) return invalidArgument("compactStreams: streams and reports must hold count entries");
  if (control.threads == 0) return invalidArgument("compactStreams: threads must be >= 1");
  for (uint32_t i = 0; i < count; ++i) KVC_RETURN_IF_ERROR(checkInput(streams[i], i));
  if (cancelled(control)) return Status(StatusCode::kDisposed, "compaction cancelled");
  try {
    return compactStreamsOrThrow(rows, ws, pool, codec, streams, count, options, control, reports, fit);
  } catch (const std::bad_alloc&) {
    return outOfMemory("compaction ran out of host memory");
  } catch (const std::system_error&) {
    return internalError("compaction could not start its threads");
  } catch (...) {
    return internalError("compaction: unexpected exception");
  }
}

Status applyCompactionFit(Backend& rows, const PoolView& pool, const RowCodec& codec, const CompactionFit& fit,
                          uint32_t index, const StreamView& rebuilt) {
  const auto* cpuFit = dynamic_cast<const CpuCompactionFit*>(&fit);
  if (!cpuFit) return invalidArgument("applyCompactionFit: the fit was not made by the cpu backend");
  if (index >= cpuFit->streams.size())
    return invalidArgument("applyCompactionFit: stream " + std::to_string(index) + " is not in the fit (" +
                           std::to_string(cpuFit->streams.size()) + " streams)");
  const CpuCompactionFit::Stream& s = cpuFit->streams[index];
  const uint32_t t = static_cast<uint32_t>(s.changed.size()), D = valueDimOf(codec);
  if (rebuilt.length < 0 || static_cast<uint64_t>(rebuilt.length) < t)
    return invalidArgument("applyCompactionFit: the rebuilt stream holds " + std::to_string(rebuilt.length) +
                           " rows, the fit " + std::to_string(t));
  // Runs of changed rows: one rewriteRows each (protected and unchanged rows stay bit-exact).
  for (uint32_t j = 0; j < t;) {
    if (!s.changed[j]) {
      ++j;
      continue;
    }
    uint32_t end = j;
    while (end < t && s.changed[end]) ++end;
    KVC_RETURN_IF_ERROR(rows.rewriteRows(pool, codec, rebuilt, j, end - j, s.values.data() + static_cast<size_t>(j) * D,
                                         s.beta.data() + j));
    j = end;
  }
  return Status::ok();
}

}  // namespace kvc::cpu
