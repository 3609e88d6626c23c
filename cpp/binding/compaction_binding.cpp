// compact(sequence, spec, onProgress | null) -> Promise<report> and compactSync(sequence, spec)
// -> report. The spec is one flat object built by lib/compactor.ts.
//
// Asynchronous compaction: plan on the main thread, mark the sequence busy (appends,
// attention, truncate, fork, free and eviction then fail with BUSY), compute on a libuv
// thread, then clear busy and apply the results on the main thread. The worker holds a
// reference to the JS sequence (which holds the cache handle) so neither can be collected,
// a reference to the cache itself, and copies of every input array. Disposing the cache
// meanwhile does not wait: it raises the cancel flag, the worker stops at its next batch,
// the promise rejects with DISPOSED (nothing was applied) and the cache is destroyed then.
// abort() (an AbortSignal in lib/) stops it the same way with ABORTED. When the environment
// shuts down (worker_thread terminated) the cleanup hook abandons the work (PendingWork):
// it is aborted, joined, and nothing reaches JavaScript any more.
#include "compaction_binding.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "../core/compaction/sequence_compactor.h"
#include "addon_data.h"
#include "args.h"
#include "errors.h"
#include "guard.h"
#include "kvc/finite.h"
#include "kvc/thread_locals.h"
#include "kvc/generated/schema.h"
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
  TypedView a;
  typedField(env, o, name, napi_int32_array, "Int32Array", &a);
  const int32_t* d = static_cast<const int32_t*>(a.data);
  for (size_t i = 0; i < a.length; ++i) {
    if (d[i] < 0) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must hold non-negative indices");
    out.push_back(static_cast<uint32_t>(d[i]));
  }
  if (out.empty()) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must not be empty");
  return out;
}

// Per-layer typed arrays (of `type`, or null), copied: the compaction may outlive the call.
// `finite`: the elements must be finite floats (reference queries are numbers with a meaning
// too, README "Semantics").
template <class T>
std::vector<std::vector<T>> layerTyped(Napi::Env env, Napi::Object o, const char* name, napi_typedarray_type type,
                                       const char* typeName, bool finite) {
  Napi::Value v = o.Get(name);
  std::vector<std::vector<T>> out;
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsArray()) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be an array");
  Napi::Array a = v.As<Napi::Array>();
  // One entry per layer; a longer array (e.g. a sparse one of length 2^32 - 1) is refused
  // before anything is allocated for it.
  if (a.Length() > schema::cache::kLayersMax) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " has more entries than layers");
  out.resize(a.Length());
  for (uint32_t l = 0; l < a.Length(); ++l) {
    Napi::Value e = a.Get(l);
    if (e.IsUndefined() || e.IsNull()) continue;
    const std::string at = std::string("spec.") + name + "[" + std::to_string(l) + "]";
    TypedView f;
    if (!typedView(env, e, &f) || f.type != type) throwError(env, StatusCode::kInvalidArgument, at + " must be " + typeName + " or null");
    const T* d = static_cast<const T*>(f.data);
    if (finite && !allFiniteF32(reinterpret_cast<const float*>(d), f.length)) {
      throwError(env, StatusCode::kInvalidArgument, at + " must be finite (it holds NaN or Infinity)");
    }
    out[l].assign(d, d + f.length);
  }
  return out;
}

std::vector<std::vector<float>> layerArrays(Napi::Env env, Napi::Object o, const char* name) {
  return layerTyped<float>(env, o, name, napi_float32_array, "a Float32Array", true);
}

// Token positions of queries / heldOut on a cache with rope.
std::vector<std::vector<int32_t>> layerPositions(Napi::Env env, Napi::Object o, const char* name) {
  return layerTyped<int32_t>(env, o, name, napi_int32_array, "an Int32Array", false);
}

namespace limits = schema::compaction;

static_assert(static_cast<int>(compaction::Method::kOmp) + 1 == schema::kCompactionMethodCount, "compactionMethod names and Method differ");
static_assert(static_cast<int>(QuerySource::kGiven) + 1 == schema::kQuerySourceCount, "querySource names and QuerySource differ");

// spec: { method: 'highest-attention' | 'omp', ratio, targetTokens, sinks, recent, chunkSize,
//         ridge, nnlsIterations, threads, layers, heads: Int32Array | null,
//         querySource: 'recorded' | 'keys' | 'given', queries, heldOut: (Float32Array | null)[] | null,
//         queryPositions, heldOutPositions: (Int32Array | null)[] | null (caches with rope),
//         maxKeyQueries, online: boolean, maxRows }: names, limits and defaults from schema/options.json.
SequenceRequest requestOf(Napi::Env env, Napi::Value value) {
  Napi::Object o = specArg(env, value, "compaction spec");
  SequenceRequest r;
  r.options.method = static_cast<compaction::Method>(
      enumField(env, o, "method", schema::kCompactionMethodNames, schema::kCompactionMethodCount, limits::kMethodDefault));
  // ratio 0: the target is targetTokens.
  r.ratio = numberField(env, o, "ratio", 0.0, limits::kRatioMin, limits::kRatioMax);
  r.targetTokens = u32Field(env, o, "targetTokens", 0, 0, limits::kTargetTokensMax);
  if (r.ratio == 0 && r.targetTokens == 0) throwError(env, StatusCode::kInvalidArgument, "spec.ratio or spec.targetTokens must be positive");
  r.sinks = u32Field(env, o, "sinks", limits::kSinksDefault, limits::kSinksMin, limits::kSinksMax);
  r.recent = u32Field(env, o, "recent", limits::kRecentDefault, limits::kRecentMin, limits::kRecentMax);
  r.options.chunkSize = u32Field(env, o, "chunkSize", limits::kChunkSizeDefault, limits::kChunkSizeMin, limits::kChunkSizeMax);
  r.options.ridge = static_cast<float>(numberField(env, o, "ridge", limits::kRidgeDefault, limits::kRidgeMin, limits::kRidgeMax));
  r.options.nnlsIterations =
      u32Field(env, o, "nnlsIterations", limits::kNnlsIterationsDefault, limits::kNnlsIterationsMin, limits::kNnlsIterationsMax);
  r.threads = u32Field(env, o, "threads", 1, limits::kThreadsMin, limits::kThreadsMax);
  r.layers = indexList(env, o, "layers");
  r.heads = indexList(env, o, "heads");
  r.querySource = static_cast<QuerySource>(
      enumField(env, o, "querySource", schema::kQuerySourceNames, schema::kQuerySourceCount, limits::kQuerySourceDefault));
  r.queries = layerArrays(env, o, "queries");
  r.heldOut = layerArrays(env, o, "heldOut");
  r.queryPositions = layerPositions(env, o, "queryPositions");
  r.heldOutPositions = layerPositions(env, o, "heldOutPositions");
  r.maxKeyQueries = u32Field(env, o, "maxKeyQueries", limits::kMaxKeyQueriesDefault, limits::kMaxKeyQueriesMin, limits::kMaxKeyQueriesMax);
  r.online = boolField(env, o, "online", false);
  r.maxRows = u32Field(env, o, "maxRows", 0, 0, limits::kMaxRowsMax);
  if (r.online && r.maxRows < limits::kMaxRowsMin) throwError(env, StatusCode::kInvalidArgument, "spec.maxRows must be positive for online compaction");
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
    const CompactionStreamReport& r = sp.result;
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
  const double blockBytes = static_cast<double>(blockFootprint(cache.pool().layout));
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

// Lowest priority for the calling thread (Linux: nice 19 for this thread only; elsewhere a no-op).
void lowerThisThreadPriority() {
#ifdef __linux__
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
#endif
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class CompactWorker : public Napi::AsyncProgressWorker<double>, public PendingWork {
 public:
  CompactWorker(Napi::Env env, Napi::Object sequence, Napi::Value onProgress, std::shared_ptr<CacheHandle> handle,
                std::shared_ptr<Cache> cache, SequenceRequest request, SequencePlan plan,
                std::shared_ptr<std::atomic<bool>> abort)
      : Napi::AsyncProgressWorker<double>(env, "kvcompact.compact"),
        deferred_(Napi::Promise::Deferred::New(env)),
        sequence_(Napi::Persistent(sequence)),
        handle_(std::move(handle)),
        cache_(std::move(cache)),
        request_(std::move(request)),
        plan_(std::move(plan)),
        abort_(std::move(abort)),
        start_(std::chrono::steady_clock::now()) {
    if (onProgress.IsFunction()) onProgress_ = Napi::Persistent(onProgress.As<Napi::Function>());
    request_.abort = abort_.get();
  }

  ~CompactWorker() override { untrack(); }

  Napi::Promise promise() const { return deferred_.Promise(); }

  // Registers the work with the environment's cleanup hook (JS thread).
  void track() {
    addonData(Env()).pending.insert(this);
    tracked_ = true;
  }

  // Background maintenance: the compaction runs on a thread of its own at the lowest
  // scheduling priority, so the threads that decode meanwhile win every contested core
  // (a libuv thread is shared and its priority could not be raised back).
  void setBackground(bool background) { background_ = background; }

  void Execute(const ExecutionProgress& progress) override {
    reserveThreadLocals();  // a libuv thread: see kvc/thread_locals.h
    auto run = [&] {
      try {
        status_ = compaction::computeCompaction(*cache_, request_, &plan_, [&](double f) { progress.Send(&f, 1); });
      } catch (const std::bad_alloc&) {
        status_ = outOfMemory("compaction ran out of host memory");
      } catch (const std::exception& e) {
        status_ = internalError(std::string("compaction failed: ") + e.what());
      } catch (...) {
        status_ = internalError("compaction failed with an unknown exception");
      }
    };
    bool ranInThread = false;
    if (background_) {
      try {
        std::thread worker([&] {
          reserveThreadLocals();  // a thread of its own: see kvc/thread_locals.h
          lowerThisThreadPriority();
          run();
        });
        worker.join();
        ranInThread = true;
      } catch (...) {
        // No thread could be started: compute here, at the normal priority.
      }
    }
    if (!ranInThread) run();
    // The last touch of the cache from this thread: a waiting ~Cache may proceed.
    cache_->leaveBackground();
    {
      std::lock_guard<std::mutex> lock(executedMutex_);
      executed_ = true;
    }
    executedCv_.notify_all();
  }

  // Environment teardown (see PendingWork): stop the compaction at its next batch (the same
  // per-request flag as abort(); dispose() no longer waits for compactions, so resetting
  // the cache would not stop it) and join it (wait until Execute has returned); the
  // completion, if it still runs, then does nothing. Node finishes running work before the
  // cleanup hooks, so the wait is normally already over.
  void abandon() noexcept override {
    abandoned_ = true;
    tracked_ = false;  // the hook has taken it off the list
    abort_->store(true, std::memory_order_release);
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
      if (handle_->cache == cache_) {
        if (Sequence* seq = cache_->mutableSequence(plan_.id)) seq->busy = false;
      }
      deferred_.Reject(e.Value());
    } catch (...) {
    }
  }

  static Status abortedStatus() { return aborted("the compaction was aborted; nothing was applied"); }

 private:
  void untrack() noexcept {
    if (!tracked_) return;
    tracked_ = false;
    addonData(Env()).pending.erase(this);
  }

  void settle() {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (handle_->cache != cache_) {
      deferred_.Reject(errorValue(env, StatusCode::kDisposed, "the cache was disposed while the compaction ran; nothing was applied"));
      return;
    }
    Sequence* seq = cache_->mutableSequence(plan_.id);
    if (seq) seq->busy = false;
    // An abort that arrived after the last batch still wins: apply runs here, on the main
    // thread, after every abort() made before it, so the sequence stays as it was.
    if (status_.isOk() && abort_->load(std::memory_order_acquire)) status_ = abortedStatus();
    if (!status_.isOk()) {
      deferred_.Reject(errorValue(env, status_.code(), status_.message()));
      return;
    }
    const Status applied = compaction::applyCompaction(*cache_, &plan_);
    handle_->reportMemory();
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
  // Keeps the cache alive after a dispose(), which then never waits for this worker; the
  // cache is destroyed when the worker is deleted, on the main thread.
  std::shared_ptr<Cache> cache_;
  SequenceRequest request_;
  SequencePlan plan_;
  std::shared_ptr<std::atomic<bool>> abort_;  // raised by the abort function compact() returns
  Status status_;
  std::chrono::steady_clock::time_point start_;
  std::mutex executedMutex_;
  std::condition_variable executedCv_;
  bool executed_ = false;   // Execute has returned (guarded by executedMutex_)
  bool abandoned_ = false;  // JS thread only
  bool tracked_ = false;    // listed in AddonData::pending
  bool background_ = false; // compute on a thread of its own at the lowest priority
};

// compact(sequence, spec, onProgress | null) -> { promise: Promise<report>, abort(): void }.
// abort() raises a per-request flag that the compaction checks between batches of streams
// and once more before applying; the promise then rejects with ABORTED and nothing changes.
Napi::Value compact(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SequenceWrap* wrap = SequenceWrap::fromArg(info, 0);
  Cache& cache = wrap->live(env);
  SequenceRequest request = requestOf(env, info[1]);
  if (info.Length() > 2 && !info[2].IsFunction() && !info[2].IsNull() && !info[2].IsUndefined()) {
    throwError(env, StatusCode::kInvalidArgument, "onProgress must be a function or null");
  }
  SequencePlan plan;
  throwIfError(env, compaction::planCompaction(cache, wrap->id(), request, &plan));
  auto abort = std::make_shared<std::atomic<bool>>(false);
  // The abort function owns a reference to the flag, so it may be called at any time, even
  // after the worker is gone (then it does nothing).
  Napi::Function abortFunction = Napi::Function::New(env, [abort](const Napi::CallbackInfo& i) {
    abort->store(true, std::memory_order_release);
    return i.Env().Undefined();
  }, "abort");
  Napi::Object out = Napi::Object::New(env);
  out.Set("abort", abortFunction);
  // spec.background (lib/maintain.ts): lowest thread priority; requestOf checked that spec is an object.
  const bool background = info[1].As<Napi::Object>().Get("background").ToBoolean().Value();
  auto* worker = new CompactWorker(env, info[0].As<Napi::Object>(), info.Length() > 2 ? info[2] : env.Undefined(),
                                   wrap->sharedHandle(), wrap->handle()->cache, std::move(request), std::move(plan), abort);
  worker->setBackground(background);
  Sequence* seq = cache.mutableSequence(wrap->id());
  try {
    out.Set("promise", worker->promise());
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
  return out;
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
  const Status applied = compaction::applyCompaction(cache, &plan);
  wrap->handle()->reportMemory();
  throwIfError(env, applied);
  return reportOf(env, cache, plan, secondsSince(t0));
}

}  // namespace

void registerCompaction(Napi::Env env, Napi::Object exports) {
  exports.Set("compact", Napi::Function::New(env, guarded<compact>));
  exports.Set("compactSync", Napi::Function::New(env, guarded<compactSync>));
}

}  // namespace kvc::binding
