// Eviction functions on the module exports: evict(), policyScores(), streamScores(),
// recordedQueries() and streamPositions(), each taking a NativeSequence first. The policy
// and budget arrive as one flat spec object built by lib/eviction-policy.ts.
#include "eviction_binding.h"

#include <chrono>
#include <cstring>
#include <string>

#include "../core/eviction/evict.h"
#include "../core/eviction/scores.h"
#include "addon_data.h"
#include "guard.h"
#include "args.h"
#include "errors.h"
#include "kvc/generated/schema.h"
#include "sequence_wrap.h"

namespace kvc::binding {

namespace {

struct Target {
  Cache* cache;
  uint64_t id;
};

SequenceWrap* wrap(const Napi::CallbackInfo& info) { return SequenceWrap::fromArg(info, 0); }

// The live cache and sequence id of argument 0 (a NativeSequence).
Target sequenceArg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SequenceWrap* wrap = SequenceWrap::fromArg(info, 0);
  Cache& cache = wrap->live(env);
  return {&cache, wrap->id()};
}

namespace limits = schema::eviction;

static_assert(static_cast<int>(ScoreSource::kGiven) + 1 == schema::kScoreSourceCount, "scoreSource names and kvc::ScoreSource differ");
static_assert(static_cast<int>(BudgetSpec::Kind::kLayerRatios) + 1 == schema::kBudgetKindCount, "budgetKind names and BudgetSpec::Kind differ");

// spec: { source: 'recency' | 'accumulated' | ..., sinks, recent, window, pool, seed, rankPositions,
//         given: Float32Array | null }, names and limits from schema/options.json. Every
// field is required: a spec that lacks one was not built by lib/eviction-policy.ts.
PolicySpec policyOf(Napi::Env env, Napi::Value value) {
  Napi::Object o = specArg(env, value, "policy spec");
  PolicySpec p;
  p.source = static_cast<ScoreSource>(enumField(env, o, "source", schema::kScoreSourceNames, schema::kScoreSourceCount, -1));
  p.sinks = u32Field(env, o, "sinks", kRequired, limits::kSinksMin, limits::kSinksMax);
  p.recent = u32Field(env, o, "recent", kRequired, limits::kRecentMin, limits::kRecentMax);
  p.window = u32Field(env, o, "window", kRequired, limits::kWindowMin, limits::kWindowMax);
  p.pool = u32Field(env, o, "pool", kRequired, limits::kPoolMin, limits::kPoolMax);
  p.seed = u32Field(env, o, "seed", kRequired, limits::kSeedMin, limits::kSeedMax);
  p.rankPositions = boolField(env, o, "rankPositions", false);
  TypedView given;
  if (typedField(env, o, "given", napi_float32_array, "Float32Array", &given)) {
    p.given = static_cast<const float*>(given.data);
    p.givenCount = given.length;
  }
  throwIfError(env, validatePolicy(p));
  return p;
}

// budget: { kind: 'keep' | 'ratio' | 'layers', keep, ratio, layerRatios: Float64Array | null,
//           perHead: 'uniform' | 'adaptive', safeguard, schedule: 'uniform' | 'pyramid', slope }
BudgetSpec budgetOf(Napi::Env env, Napi::Value value) {
  Napi::Object o = specArg(env, value, "budget spec");
  BudgetSpec b;
  b.kind = static_cast<BudgetSpec::Kind>(enumField(env, o, "kind", schema::kBudgetKindNames, schema::kBudgetKindCount, -1));
  b.keep = u32Field(env, o, "keep", 0, limits::kKeepMin, limits::kKeepMax);
  b.ratio = numberField(env, o, "ratio", limits::kRatioDefault, limits::kRatioMin, limits::kRatioMax);
  TypedView layers;
  if (typedField(env, o, "layerRatios", napi_float64_array, "Float64Array", &layers)) {
    const double* d = static_cast<const double*>(layers.data);
    b.layerRatios.assign(d, d + layers.length);
  }
  if (b.kind == BudgetSpec::Kind::kLayerRatios && b.layerRatios.empty()) {
    throwError(env, StatusCode::kInvalidArgument, "spec.layerRatios is required when spec.kind is 'layers'");
  }
  b.adaptive = enumField(env, o, "perHead", schema::kPerHeadNames, schema::kPerHeadCount, 0) == 1;
  b.safeguard = numberField(env, o, "safeguard", limits::kSafeguardDefault, limits::kSafeguardMin, limits::kSafeguardMax);
  b.pyramid = enumField(env, o, "schedule", schema::kScheduleNames, schema::kScheduleCount, 0) == 1;
  b.slope = numberField(env, o, "slope", limits::kSlopeDefault, limits::kSlopeMin, limits::kSlopeMax);
  return b;
}

void checkStream(Napi::Env env, const Cache& cache, uint32_t layer, uint32_t head) {
  if (layer >= cache.config().layers) throwError(env, StatusCode::kInvalidArgument, "layer " + std::to_string(layer) + " is out of range");
  if (head >= cache.config().kvHeads) throwError(env, StatusCode::kInvalidArgument, "kvHead " + std::to_string(head) + " is out of range");
}

Napi::Float32Array floats(Napi::Env env, const float* data, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), data, 4 * n);
  return a;
}

// evict(sequence, policySpec, budgetSpec) -> { rowsBefore, rowsAfter, keptPerStream, blocksFreed, bytesFreed, nativeMilliseconds }
Napi::Value evict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Target t = sequenceArg(info);
  const PolicySpec p = policyOf(env, info[1]);
  const BudgetSpec b = budgetOf(env, info[2]);
  const auto t0 = std::chrono::steady_clock::now();
  EvictionReport r;
  throwIfError(env, evictSequence(*t.cache, t.id, p, b, &r));
  wrap(info)->handle()->reportMemory();  // copy-on-write of a fork's shared blocks may commit memory
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  Napi::Object out = Napi::Object::New(env);
  out.Set("rowsBefore", static_cast<double>(r.rowsBefore));
  out.Set("rowsAfter", static_cast<double>(r.rowsAfter));
  Napi::Int32Array kept = Napi::Int32Array::New(env, r.keptPerStream.size());
  std::memcpy(kept.Data(), r.keptPerStream.data(), 4 * r.keptPerStream.size());
  out.Set("keptPerStream", kept);
  out.Set("blocksFreed", static_cast<double>(r.blocksFreed));
  out.Set("bytesFreed", static_cast<double>(r.bytesFreed));
  out.Set("nativeMilliseconds", ms);
  return out;
}

// policyScores(sequence, policySpec, layer, kvHead) -> Float32Array [length]
Napi::Value policyScores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Target t = sequenceArg(info);
  const PolicySpec p = policyOf(env, info[1]);
  const uint32_t layer = argU32(info, 2, "layer"), head = argU32(info, 3, "kvHead");
  checkStream(env, *t.cache, layer, head);
  // Low-rank streams still calibrating are fitted first, as eviction does.
  throwIfError(env, t.cache->finishCalibration(t.id));
  std::vector<float> scores;
  throwIfError(env, scoreStream(*t.cache, *t.cache->sequence(t.id), layer, head, p, 0, &scores));
  return floats(env, scores.data(), scores.size());
}

// streamScores(sequence, layer, kvHead) -> Float32Array [length] of accumulated mass, or null
Napi::Value streamScores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Target t = sequenceArg(info);
  const uint32_t layer = argU32(info, 1, "layer"), head = argU32(info, 2, "kvHead");
  checkStream(env, *t.cache, layer, head);
  const Stream& s = t.cache->sequence(t.id)->stream(layer, t.cache->config().kvHeads, head);
  if (s.scores.size() != static_cast<size_t>(s.rows())) return env.Null();
  return floats(env, s.scores.data(), s.scores.size());
}

// recordedQueries(sequence, layer, kvHead) -> { reservoir [n*D], recent [m*D] oldest first, seen, recentSeen,
//   reservoirPositions [n] (caches with rope) }
Napi::Value recordedQueries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Target t = sequenceArg(info);
  const uint32_t layer = argU32(info, 1, "layer"), head = argU32(info, 2, "kvHead");
  checkStream(env, *t.cache, layer, head);
  const CacheConfig& c = t.cache->config();
  // A low-rank stream with bases logs projected queries: they are lifted back to headDim
  // (the part of each query in the span of the key basis, which is all attention sees).
  QueryLog lifted;
  throwIfError(env, t.cache->queryLog(t.id, layer, head, &lifted));
  const QueryLog& log = lifted;
  const size_t D = c.headDim;
  const uint64_t reservoirCount = std::min<uint64_t>(log.seen, c.queryReservoir);
  const uint64_t recentCount = std::min<uint64_t>(log.recentSeen, c.recentQueries);
  Napi::Float32Array recent = Napi::Float32Array::New(env, recentCount * D);
  for (uint64_t j = 0; j < recentCount; ++j) {
    const uint64_t slot = (log.recentSeen - recentCount + j) % c.recentQueries;
    std::memcpy(recent.Data() + j * D, log.recent.data() + slot * D, 4 * D);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("reservoir", floats(env, log.reservoir.data(), reservoirCount * D));
  if (c.ropeDims != 0 && log.reservoirPositions.size() == reservoirCount) {
    Napi::Int32Array positions = Napi::Int32Array::New(env, reservoirCount);
    if (reservoirCount) std::memcpy(positions.Data(), log.reservoirPositions.data(), 4 * reservoirCount);
    out.Set("reservoirPositions", positions);
  }
  out.Set("recent", recent);
  out.Set("seen", static_cast<double>(log.seen));
  out.Set("recentSeen", static_cast<double>(log.recentSeen));
  return out;
}

// streamPositions(sequence, layer, kvHead) -> Int32Array [length]
Napi::Value streamPositions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Target t = sequenceArg(info);
  const uint32_t layer = argU32(info, 1, "layer"), head = argU32(info, 2, "kvHead");
  checkStream(env, *t.cache, layer, head);
  const Stream& s = t.cache->sequence(t.id)->stream(layer, t.cache->config().kvHeads, head);
  if (s.pendingRows() > 0) {  // a calibrating low-rank stream holds its rows off the pool
    Napi::Int32Array held = Napi::Int32Array::New(env, s.pendingPositions.size());
    std::memcpy(held.Data(), s.pendingPositions.data(), 4 * s.pendingPositions.size());
    return held;
  }
  Napi::Int32Array out = Napi::Int32Array::New(env, s.length);
  if (s.length > 0) {
    throwIfError(env, t.cache->readStreamRows(s, 0, static_cast<uint32_t>(s.length), nullptr, nullptr, nullptr, out.Data()));
  }
  return out;
}

}  // namespace

void registerEviction(Napi::Env env, Napi::Object exports) {
  exports.Set("evict", Napi::Function::New(env, guarded<evict>));
  exports.Set("policyScores", Napi::Function::New(env, guarded<policyScores>));
  exports.Set("streamScores", Napi::Function::New(env, guarded<streamScores>));
  exports.Set("recordedQueries", Napi::Function::New(env, guarded<recordedQueries>));
  exports.Set("streamPositions", Napi::Function::New(env, guarded<streamPositions>));
}

}  // namespace kvc::binding
