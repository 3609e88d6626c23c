// See maintain_binding.h. The operations are Cache::snapshot and Cache::replacePrefix
// (cpp/core/replace_prefix.cpp); this file only converts arguments and results.
#include "maintain_binding.h"

#include <algorithm>

#include "errors.h"
#include "guard.h"
#include "sequence_wrap.h"

namespace kvc::binding {

namespace {

// snapshot(sequence) -> NativeSequence: a copy-on-write fork that remembers every stream's length.
Napi::Value snapshot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SequenceWrap* wrap = SequenceWrap::fromArg(info, 0);
  Cache& cache = wrap->live(env);
  uint64_t child = 0;
  throwIfError(env, cache.snapshot(wrap->id(), &child));
  return SequenceWrap::create(env, wrap->sharedHandle(), child);
}

// replacePrefix(sequence, snapshot): the swap (ABORTED when the sequence changed below the snapshot).
Napi::Value replacePrefix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SequenceWrap* wrap = SequenceWrap::fromArg(info, 0);
  SequenceWrap* snap = SequenceWrap::fromArg(info, 1);
  Cache& cache = wrap->live(env);
  if (snap->handle() != wrap->handle()) throwError(env, StatusCode::kInvalidArgument, "the snapshot belongs to another cache");
  const Status st = cache.replacePrefix(wrap->id(), snap->id());
  wrap->handle()->reportMemory();
  throwIfError(env, st);
  return env.Undefined();
}

// sequenceUsage(sequence) -> { blocks, rows, minRows, maxRows, calibrating }: block-table entries and rows
// over every stream, the shortest and longest stream's rows (blocks shared with a fork are
// counted here too), and the low-rank streams still calibrating (no bases yet).
Napi::Value sequenceUsage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SequenceWrap* wrap = SequenceWrap::fromArg(info, 0);
  Cache& cache = wrap->live(env);
  const Sequence* seq = cache.sequence(wrap->id());
  if (!seq) throwError(env, StatusCode::kDisposed, "the sequence has been freed");
  double blocks = 0, rows = 0, minRows = 0, maxRows = 0, calibrating = 0;
  for (size_t i = 0; i < seq->streams.size(); ++i) {
    const Stream& s = seq->streams[i];
    if (cache.config().lowRank() && !s.basis) ++calibrating;
    const double n = static_cast<double>(s.rows());
    blocks += static_cast<double>(s.blocks.size());
    rows += n;
    minRows = i == 0 ? n : std::min(minRows, n);
    maxRows = std::max(maxRows, n);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("blocks", blocks);
  out.Set("rows", rows);
  out.Set("minRows", minRows);
  out.Set("maxRows", maxRows);
  out.Set("calibrating", calibrating);
  return out;
}

}  // namespace

void registerMaintain(Napi::Env env, Napi::Object exports) {
  exports.Set("snapshot", Napi::Function::New(env, guarded<snapshot>));
  exports.Set("replacePrefix", Napi::Function::New(env, guarded<replacePrefix>));
  exports.Set("sequenceUsage", Napi::Function::New(env, guarded<sequenceUsage>));
}

}  // namespace kvc::binding
