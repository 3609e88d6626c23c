// compact(sequence, spec, onProgress | null) -> Promise<report> and compactSync(sequence, spec)
// -> report. The spec is one flat object built by lib/compactor.ts.
//
// Asynchronous compaction: plan on the main thread, mark the sequence busy (appends,
// attention, truncate, fork, free and eviction then fail with BUSY), compute on a libuv
// thread, then clear busy and apply the results on the main thread. The worker holds a
// reference to the JS sequence (which holds the cache handle) so neither can be collected,
// and owns copies of every input array. Disposing the cache meanwhile waits for the
// worker's current batch (Cache::enterBackground / ~Cache) and the promise rejects with
// DISPOSED; nothing was applied. When the environment shuts down (worker_thread terminated)
// the cleanup hook abandons the work (PendingWork): nothing reaches JavaScript any more.
#include "compaction_binding.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cmath>
#include <memory>
#include <string>

#include "../core/compaction/sequence_compactor.h"
#include "addon_data.h"
#include "guard.h"
#include "kvc/finite.h"
#include "args.h"
#include "errors.h"
#include "sequence_wrap.h"

namespace kvc::binding {

namespace {

using compaction::QuerySource;
using compaction::SequencePlan;
using compaction::SequenceRequest;

std::vector<uint32_t> indexList(Napi::Env env, Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  std::vector<uint32_t> out;
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be an Int32Array");
  }
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  for (size_t i = 0; i < a.ElementLength(); ++i) {
    if (a[i] < 0) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must hold non-negative indices");
    out.push_back(static_cast<uint32_t>(a[i]));
  }
  if (out.empty()) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must not be empty");
  return out;
}

// Per-layer arrays (Float32Array or null), copied: the compaction may outlive the call.
std::vector<std::vector<float>> layerArrays(Napi::Env env, Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  std::vector<std::vector<float>> out;
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsArray()) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be an array");
  Napi::Array a = v.As<Napi::Array>();
  out.resize(a.Length());
  for (uint32_t l = 0; l < a.Length(); ++l) {
    Napi::Value e = a.Get(l);
    if (e.IsUndefined() || e.IsNull()) continue;
    if (!e.IsTypedArray() || e.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + "[" + std::to_string(l) + "] must be a Float32Array or null");
    }
    Napi::Float32Array f = e.As<Napi::Float32Array>();
    // Reference queries are numbers with a meaning too (README "Semantics").
    if (!allFiniteF32(f.Data(), f.ElementLength())) {
      throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + "[" + std::to_string(l) + "] must be finite (it holds NaN or Infinity)");
    }
    out[l].assign(f.Data(), f.Data() + f.ElementLength());
  }
  return out;
}

// spec: { method: 0 highest-attention | 1 omp, ratio, targetTokens, sinks, recent, chunkSize,
//         ridge, nnlsIterations, threads, layers, heads: Int32Array | null,
//         querySource: 0 recorded | 1 keys | 2 given, queries, heldOut: (Float32Array | null)[] | null,
//         maxKeyQueries, online: boolean, maxRows }
SequenceRequest requestOf(Napi::Env env, Napi::Value value) {
  if (!value.IsObject()) throwError(env, StatusCode::kInvalidArgument, "compaction spec must be an object");
  Napi::Object o = value.As<Napi::Object>();
  SequenceRequest r;
  const uint32_t method = u32Field(env, o, "method", 0);
  if (method > 1) throwError(env, StatusCode::kInvalidArgument, "spec.method must be 0 (highest-attention) or 1 (omp)");
  r.options.method = method == 1 ? compaction::Method::kOmp : compaction::Method::kHighestAttention;
  r.ratio = numberField(env, o, "ratio", 0.0);
  r.targetTokens = u32Field(env, o, "targetTokens", 0);
  r.sinks = u32Field(env, o, "sinks", 0);
  r.recent = u32Field(env, o, "recent", 0);
  r.options.chunkSize = u32Field(env, o, "chunkSize", 0);
  r.options.ridge = static_cast<float>(numberField(env, o, "ridge", r.options.ridge));
  r.options.nnlsIterations = u32Field(env, o, "nnlsIterations", r.options.nnlsIterations);
  r.threads = u32Field(env, o, "threads", 1);
  r.layers = indexList(env, o, "layers");
  r.heads = indexList(env, o, "heads");
  const uint32_t source = u32Field(env, o, "querySource", 0);
  if (source > 2) throwError(env, StatusCode::kInvalidArgument, "spec.querySource must be 0, 1 or 2");
  r.querySource = static_cast<QuerySource>(source);
  r.queries = layerArrays(env, o, "queries");
  r.heldOut = layerArrays(env, o, "heldOut");
  r.maxKeyQueries = u32Field(env, o, "maxKeyQueries", r.maxKeyQueries);
  r.online = o.Get("online").ToBoolean();
  r.maxRows = u32Field(env, o, "maxRows", 0);
  return r;
}

const char* sourceName(QuerySource s) {
  switch (s) {
    case QuerySource::kRecorded: return "recorded";
    case QuerySource::kKeys: return "keys";
    case QuerySource::kGiven: return "given";
  }
  return "recorded";
}

Napi::Object reportOf(Napi::Env env, const Cache& cache, const SequencePlan& plan, double seconds) {
  Napi::Object out = Napi::Object::New(env);
  Napi::Array streams = Napi::Array::New(env, plan.streams.size());
  double before = 0, after = 0;
  for (size_t i = 0; i < plan.streams.size(); ++i) {
    const compaction::StreamPlan& sp = plan.streams[i];
    const compaction::Result& r = sp.result;
    Napi::Object s = Napi::Object::New(env);
    s.Set("layer", sp.layer);
    s.Set("kvHead", sp.head);
    s.Set("rowsBefore", sp.rowsBefore);
    s.Set("rowsAfter", static_cast<double>(r.keep.size()));
    s.Set("target", sp.target);
    s.Set("queries", sp.queryCount);
    s.Set("querySource", sourceName(sp.querySource));
    s.Set("outputError", r.outputError);
    s.Set("massError", r.massError);
    s.Set("heldOutOutputError", r.heldOutOutputError);
    s.Set("heldOutMassError", r.heldOutMassError);
    s.Set("ridgeRaises", r.ridgeRaises);
    s.Set("secondsScores", r.secondsScores);
    s.Set("secondsSelect", r.secondsSelect);
    s.Set("secondsNnls", r.secondsNnls);
    s.Set("secondsValues", r.secondsValues);
    s.Set("secondsDiagnostics", r.secondsDiagnostics);
    streams.Set(i, s);
    before += sp.rowsBefore;
    after += static_cast<double>(r.keep.size());
  }
  out.Set("streams", streams);
  out.Set("rowsBefore", before);
  out.Set("rowsAfter", after);
  const double blockBytes = static_cast<double>(cache.pool().layout.blockBytes);
  out.Set("blockBytes", blockBytes);
  out.Set("blocksBefore", static_cast<double>(plan.blocksBefore));
  out.Set("blocksAfter", static_cast<double>(plan.blocksAfter));
  out.Set("blocksFreed", static_cast<double>(plan.blocksBefore) - static_cast<double>(plan.blocksAfter));
  out.Set("bytesFreed", (static_cast<double>(plan.blocksBefore) - static_cast<double>(plan.blocksAfter)) * blockBytes);
  out.Set("secondsRead", plan.secondsRead);
  out.Set("secondsApply", plan.secondsApply);
  out.Set("secondsTotal", seconds);
  return out;
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class CompactWorker : public Napi::AsyncProgressWorker<double>, public PendingWork {
 public:
  CompactWorker(Napi::Env env, Napi::Object sequence, Napi::Value onProgress, std::shared_ptr<CacheHandle> handle,
                Cache* cache, SequenceRequest request, SequencePlan plan)
      : Napi::AsyncProgressWorker<double>(env, "kvcompact.compact"),
        deferred_(Napi::Promise::Deferred::New(env)),
        sequence_(Napi::Persistent(sequence)),
        handle_(std::move(handle)),
        cache_(cache),
        request_(std::move(request)),
        plan_(std::move(plan)),
        start_(std::chrono::steady_clock::now()) {
    if (onProgress.IsFunction()) onProgress_ = Napi::Persistent(onProgress.As<Napi::Function>());
  }

  ~CompactWorker() override { untrack(); }

  Napi::Promise promise() const { return deferred_.Promise(); }

  // Registers the work with the environment's cleanup hook (JS thread).
  void track() {
    addonData(Env()).pending.insert(this);
    tracked_ = true;
  }

  void Execute(const ExecutionProgress& progress) override {
    try {
      if (cache_->cancelRequested()) {
        status_ = Status(StatusCode::kDisposed, "the cache was disposed before the compaction ran; nothing was applied");
      } else {
        status_ = compaction::computeCompaction(*cache_, request_, &plan_, [&](double f) { progress.Send(&f, 1); });
      }
    } catch (const std::bad_alloc&) {
      status_ = outOfMemory("compaction ran out of host memory");
    } catch (const std::exception& e) {
      status_ = internalError(std::string("compaction failed: ") + e.what());
    } catch (...) {
      status_ = internalError("compaction failed with an unknown exception");
    }
    // The last touch of the cache from this thread: a waiting dispose may proceed.
    cache_->leaveBackground();
    {
      std::lock_guard<std::mutex> lock(executedMutex_);
      executed_ = true;
    }
    executedCv_.notify_all();
  }

  // Environment teardown (see PendingWork): stop the compaction at its next batch (disposing
  // the cache raises its cancel flag) and join it (wait until Execute has returned); the
  // completion, if it still runs, then does nothing. Node finishes running work before the
  // cleanup hooks, so the wait is normally already over.
  void abandon() noexcept override {
    abandoned_ = true;
    tracked_ = false;  // the hook has taken it off the list
    try {
      handle_->cache.reset();
    } catch (...) {
    }
    std::unique_lock<std::mutex> lock(executedMutex_);
    executedCv_.wait(lock, [this] { return executed_; });
  }

  void OnProgress(const double* data, size_t count) override {
    if (abandoned_ || !count || onProgress_.IsEmpty()) return;
    try {
      Napi::HandleScope scope(Env());
      onProgress_.Call({Napi::Number::New(Env(), data[count - 1])});
    } catch (...) {
      // Documented: exceptions thrown by onProgress are ignored (and so is a failure to call
      // it while the environment shuts down).
    }
  }

  void OnOK() override {
    if (abandoned_) return;
    untrack();
    try {
      settle();
    } catch (...) {
      // The result could not be made (out of memory, or an environment that can no longer
      // run JavaScript): reject if that is still possible, else drop it. Never throw from a
      // completion: it would surface as an uncaught exception.
      try {
        Napi::HandleScope scope(Env());
        deferred_.Reject(errorValue(Env(), StatusCode::kOutOfMemory, "could not build the compaction report"));
      } catch (...) {
      }
    }
  }

  void OnError(const Napi::Error& e) override {
    // Not reached (Execute never calls SetError); kept so that a failure cannot leave the
    // sequence busy forever.
    if (abandoned_) return;
    untrack();
    try {
      if (handle_->cache && handle_->cache.get() == cache_) {
        if (Sequence* seq = cache_->mutableSequence(plan_.id)) seq->busy = false;
      }
      deferred_.Reject(e.Value());
    } catch (...) {
    }
  }

 private:
  void untrack() noexcept {
    if (!tracked_) return;
    tracked_ = false;
    addonData(Env()).pending.erase(this);
  }

  void settle() {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (!handle_->cache || handle_->cache.get() != cache_) {
      deferred_.Reject(errorValue(env, StatusCode::kDisposed, "the cache was disposed while the compaction ran; nothing was applied"));
      return;
    }
    Sequence* seq = cache_->mutableSequence(plan_.id);
    if (seq) seq->busy = false;
    if (!status_.isOk()) {
      deferred_.Reject(errorValue(env, status_.code(), status_.message()));
      return;
    }
    const Status applied = compaction::applyCompaction(*cache_, &plan_);
    if (!applied.isOk()) {
      deferred_.Reject(errorValue(env, applied.code(), applied.message()));
      return;
    }
    try {
      deferred_.Resolve(reportOf(env, *cache_, plan_, secondsSince(start_)));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::bad_alloc&) {
      deferred_.Reject(errorValue(env, StatusCode::kOutOfMemory, "out of host memory while building the compaction report"));
    }
  }

  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference sequence_;  // keeps the NativeSequence alive while the work runs
  Napi::FunctionReference onProgress_;
  std::shared_ptr<CacheHandle> handle_;
  Cache* cache_;
  SequenceRequest request_;
  SequencePlan plan_;
  Status status_;
  std::chrono::steady_clock::time_point start_;
  std::mutex executedMutex_;
  std::condition_variable executedCv_;
  bool executed_ = false;   // Execute has returned (guarded by executedMutex_)
  bool abandoned_ = false;  // JS thread only
  bool tracked_ = false;    // listed in AddonData::pending
};

// compact(sequence, spec, onProgress | null) -> Promise<report>
Napi::Value compact(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SequenceWrap* wrap = SequenceWrap::fromArg(info, 0);
  Cache& cache = wrap->live(env);
  SequenceRequest request = requestOf(env, info[1]);
  SequencePlan plan;
  throwIfError(env, compaction::planCompaction(cache, wrap->id(), request, &plan));
  auto* worker = new CompactWorker(env, info[0].As<Napi::Object>(), info.Length() > 2 ? info[2] : env.Undefined(),
                                   wrap->sharedHandle(), &cache, std::move(request), std::move(plan));
  Napi::Promise promise = worker->promise();
  Sequence* seq = cache.mutableSequence(wrap->id());
  try {
    worker->track();
    seq->busy = true;
    cache.enterBackground();
    try {
      worker->Queue();
    } catch (...) {
      cache.leaveBackground();
      throw;
    }
  } catch (...) {
    seq->busy = false;
    delete worker;  // untracks itself
    throw;
  }
  return promise;
}

// compactSync(sequence, spec) -> report (blocks the calling thread; for small online cases)
Napi::Value compactSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto t0 = std::chrono::steady_clock::now();
  SequenceWrap* wrap = SequenceWrap::fromArg(info, 0);
  Cache& cache = wrap->live(env);
  SequenceRequest request = requestOf(env, info[1]);
  SequencePlan plan;
  throwIfError(env, compaction::planCompaction(cache, wrap->id(), request, &plan));
  throwIfError(env, compaction::computeCompaction(cache, request, &plan, nullptr));
  throwIfError(env, compaction::applyCompaction(cache, &plan));
  return reportOf(env, cache, plan, secondsSince(t0));
}

}  // namespace

void registerCompaction(Napi::Env env, Napi::Object exports) {
  exports.Set("compact", Napi::Function::New(env, guarded<compact>));
  exports.Set("compactSync", Napi::Function::New(env, guarded<compactSync>));
}

}  // namespace kvc::binding
