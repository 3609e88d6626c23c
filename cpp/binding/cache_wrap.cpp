// See cache_wrap.h.
#include "cache_wrap.h"

#include <algorithm>
#include <string>

#include "addon_data.h"
#include "args.h"
#include "sparse_binding.h"
#include "cuda_emulation.h"
#include "errors.h"
#include "guard.h"
#include "kvc/generated/schema.h"
#include "sequence_wrap.h"
#include "type_tags.h"

namespace kvc::binding {

namespace {

namespace limits = schema::cache;

// An integer option in [min, max] (the schema's limits); `fallback` when undefined, and a
// required option when there is none.
uint32_t optionU32(Napi::Env env, Napi::Object o, const char* name, uint32_t min, uint32_t max, const uint32_t* fallback) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) {
    if (!fallback) throwError(env, StatusCode::kInvalidArgument, std::string("options.") + name + " is required");
    return *fallback;
  }
  if (!v.IsNumber()) throwError(env, StatusCode::kInvalidArgument, std::string("options.") + name + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!isU32(d) || d < min || d > max) {
    throwError(env, StatusCode::kInvalidArgument,
               std::string("options.") + name + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return static_cast<uint32_t>(d);
}

uint32_t optionU32(Napi::Env env, Napi::Object o, const char* name, uint32_t min, uint32_t max, uint32_t fallback) {
  return optionU32(env, o, name, min, max, &fallback);
}

bool optionBool(Napi::Env env, Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) throwError(env, StatusCode::kInvalidArgument, std::string("options.") + name + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// Storage and device cross as their names; the index in the schema's table is the enum value
// (config.h asserts that the storage tables agree).
int optionEnum(Napi::Env env, Napi::Object o, const char* name, const char* const* names, int count, int fallback) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return fallback;
  const int i = v.IsString() ? schema::enumIndex(names, count, v.As<Napi::String>().Utf8Value().c_str()) : -1;
  if (i < 0) {
    std::string known;
    for (int k = 0; k < count; ++k) known += (k ? ", '" : "'") + std::string(names[k]) + "'";
    throwError(env, StatusCode::kInvalidArgument, std::string("options.") + name + " must be one of " + known);
  }
  return i;
}

}  // namespace

Napi::Function CacheWrap::define(Napi::Env env) {
  return DefineClass(env, "NativeCache",
                     {InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::createSequence>>("createSequence"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::importSequence>>("importSequence"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::beginChunkImport>>("beginChunkImport"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::chunkImportAdd>>("chunkImportAdd"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::chunkImportFinish>>("chunkImportFinish"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::chunkImportAbort>>("chunkImportAbort"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::attentionBatch>>("attentionBatch"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::stats>>("stats"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::trimWorkspace>>("trimWorkspace"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::dispose>>("dispose")});
}

// new NativeCache({ layers, kvHeads, headDim, queryHeads, blockSize, keys, values, groupSize,
//                   rotateKeys, rotateValues, rotationSeed, maxBytes, threads, device, ... }):
// the same limits and defaults as lib/kv-cache.ts, from the same schema.
CacheWrap::CacheWrap(const Napi::CallbackInfo& info) try : Napi::ObjectWrap<CacheWrap>(info) {
  Napi::Env env = info.Env();
  info.This().As<Napi::Object>().TypeTag(&kCacheTag);
  if (info.Length() < 1) throwError(env, StatusCode::kInvalidArgument, "options must be an object");
  Napi::Object o = specArg(env, info[0], "options");
  CacheConfig c;
  c.layers = optionU32(env, o, "layers", limits::kLayersMin, limits::kLayersMax, nullptr);
  c.kvHeads = optionU32(env, o, "kvHeads", limits::kKvHeadsMin, limits::kKvHeadsMax, nullptr);
  c.headDim = optionU32(env, o, "headDim", limits::kHeadDimMin, limits::kHeadDimMax, nullptr);
  c.queryHeads = optionU32(env, o, "queryHeads", limits::kQueryHeadsMin, limits::kQueryHeadsMax, c.kvHeads);
  c.blockSize = optionU32(env, o, "blockSize", limits::kBlockSizeMin, limits::kBlockSizeMax, limits::kBlockSizeDefault);
  c.keys = static_cast<Storage>(optionEnum(env, o, "keys", schema::kStorageNames, schema::kStorageCount, limits::kKeysDefault));
  c.values = static_cast<Storage>(optionEnum(env, o, "values", schema::kStorageNames, schema::kStorageCount, limits::kValuesDefault));
  c.groupSize = optionU32(env, o, "groupSize", limits::kGroupSizeMin, limits::kGroupSizeMax, c.headDim < 32 ? c.headDim : 32);
  c.rotateKeys = optionBool(env, o, "rotateKeys");
  c.rotateValues = optionBool(env, o, "rotateValues");
  c.keySummaries = optionBool(env, o, "keySummaries");
  c.rotationSeed = optionU32(env, o, "rotationSeed", limits::kRotationSeedMin, limits::kRotationSeedMax, limits::kRotationSeedDefault);
  Napi::Value maxBytes = o.Get("maxBytes");
  if (!maxBytes.IsUndefined()) {
    if (!maxBytes.IsNumber()) throwError(env, StatusCode::kInvalidArgument, "options.maxBytes must be a number");
    const double d = maxBytes.As<Napi::Number>().DoubleValue();
    // 0: no budget (lib/ passes 0 for an omitted or infinite maxBytes).
    if (!(d >= 0 && d <= static_cast<double>(limits::kMaxBytesMax)) || d != static_cast<double>(static_cast<uint64_t>(d))) {
      throwError(env, StatusCode::kInvalidArgument, "options.maxBytes must be 0 or an integer in [1, 2^53 - 1]");
    }
    c.maxBytes = static_cast<uint64_t>(d);
  }
  c.threads = optionU32(env, o, "threads", limits::kThreadsMin, limits::kThreadsMax, 0u);
  c.queryReservoir = optionU32(env, o, "queryReservoir", limits::kQueryReservoirMin, limits::kQueryReservoirMax, limits::kQueryReservoirDefault);
  c.recentQueries = optionU32(env, o, "recentQueries", limits::kRecentQueriesMin, limits::kRecentQueriesMax, limits::kRecentQueriesDefault);
  // lowRank crosses flat (lib/kv-cache.ts resolves the nested option); 0 = off.
  c.lowRankKeys = optionU32(env, o, "lowRankKeys", 0, schema::lowRank::kKeysMax, 0u);
  c.lowRankValues = optionU32(env, o, "lowRankValues", 0, schema::lowRank::kValuesMax, 0u);
  c.calibrationRows = optionU32(env, o, "calibrationRows", schema::lowRank::kCalibrationRowsMin, schema::lowRank::kCalibrationRowsMax,
                                schema::lowRank::kCalibrationRowsDefault);
  c.device = schema::kDeviceNames[optionEnum(env, o, "device", schema::kDeviceNames, schema::kDeviceCount, limits::kDeviceDefault)];
  c.fastPrecision = optionEnum(env, o, "precision", schema::kPrecisionNames, schema::kPrecisionCount, limits::kPrecisionDefault) == 1;
  // rope: { theta, dims, style } or null / undefined (keys arrive after RoPE).
  Napi::Value rope = o.Get("rope");
  if (!rope.IsUndefined() && !rope.IsNull()) {
    if (!rope.IsObject()) throwError(env, StatusCode::kInvalidArgument, "options.rope must be an object { theta, dims, style }");
    Napi::Object r = rope.As<Napi::Object>();
    Napi::Value theta = r.Get("theta");
    if (!theta.IsNumber()) throwError(env, StatusCode::kInvalidArgument, "options.rope.theta must be a number");
    c.ropeTheta = theta.As<Napi::Number>().DoubleValue();
    c.ropeDims = optionU32(env, r, "dims", schema::rope::kDimsMin, schema::rope::kDimsMax, c.headDim);
    c.ropeStyle = static_cast<uint32_t>(optionEnum(env, r, "style", schema::kRopeStyleNames, schema::kRopeStyleCount, schema::rope::kStyleDefault));
  }
  // tiers: [{ rows, keys, values }, ...] or undefined (lib/kv-cache.ts resolved and checked
  // it; the core checks again). The last tier's rows is 0.
  Napi::Value tiers = o.Get("tiers");
  if (!tiers.IsUndefined() && !tiers.IsNull()) {
    if (!tiers.IsArray()) throwError(env, StatusCode::kInvalidArgument, "options.tiers must be an array of { rows, keys, values }");
    Napi::Array list = tiers.As<Napi::Array>();
    if (list.Length() > schema::tiers::kCountMax) throwError(env, StatusCode::kInvalidArgument, "options.tiers lists too many tiers");
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value item = list.Get(i);
      if (!item.IsObject()) throwError(env, StatusCode::kInvalidArgument, "options.tiers[" + std::to_string(i) + "] must be an object");
      Napi::Object t = item.As<Napi::Object>();
      TierSpec spec;
      spec.rows = optionU32(env, t, "rows", 0, schema::tiers::kRowsMax, 0u);
      spec.keys = static_cast<Storage>(optionEnum(env, t, "keys", schema::kStorageNames, schema::kStorageCount, limits::kKeysDefault));
      spec.values = static_cast<Storage>(optionEnum(env, t, "values", schema::kStorageNames, schema::kStorageCount, limits::kValuesDefault));
      c.tiers.push_back(spec);
    }
  }
  handle_ = std::make_shared<CacheHandle>();
  handle_->env = env;
  std::unique_ptr<Cache> cache;
  throwIfError(env, createCache(c, &cache, cudaEmulationFactory()));
  handle_->cache = std::move(cache);
  handle_->reportMemory();
} catch (...) {
  rethrowAsKVCacheError(info.Env());
}

Cache& CacheWrap::live(Napi::Env env) {
  if (!handle_->cache) throwError(env, StatusCode::kDisposed, "the cache has been disposed");
  return *handle_->cache;
}

Napi::Value CacheWrap::createSequence(const Napi::CallbackInfo& info) {
  Cache& cache = live(info.Env());
  return SequenceWrap::create(info.Env(), handle_, cache.createSequence());
}

Napi::Value CacheWrap::importSequence(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  TypedView bytes = argTypedOf(info, 0, "bytes", napi_uint8_array, "Uint8Array");
  uint64_t id = 0;
  throwIfError(env, cache.importSequence(static_cast<const uint8_t*>(bytes.data), bytes.length, &id));
  handle_->reportMemory();
  return SequenceWrap::create(env, handle_, id);
}

// attentionBatch(layer, sequences[], queries, out, lse | null, flags): one decode step (tq = 1).
Napi::Value CacheWrap::attentionBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const CacheConfig& c = cache.config();
  AttentionRequest r;
  r.layer = argU32(info, 0, "layer");
  if (info.Length() < 2 || !info[1].IsArray()) throwError(env, StatusCode::kInvalidArgument, "sequences must be an array");
  Napi::Array seqs = info[1].As<Napi::Array>();
  const uint32_t n = seqs.Length();
  batchIds_.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    Napi::Value v = seqs.Get(i);
    // Type-checked before unwrapping: only a NativeSequence carries kSequenceTag.
    if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kSequenceTag)) {
      throwError(env, StatusCode::kInvalidArgument, "sequences[" + std::to_string(i) + "] is not a Sequence");
    }
    SequenceWrap* s = SequenceWrap::Unwrap(v.As<Napi::Object>());
    if (s->handle() != handle_.get()) throwError(env, StatusCode::kInvalidArgument, "sequences[" + std::to_string(i) + "] belongs to another cache");
    batchIds_[i] = s->id();
  }
  // A sequence twice would read its rows twice and, with accumulateScores, count its
  // attention mass twice.
  sortedIds_.assign(batchIds_.begin(), batchIds_.end());
  std::sort(sortedIds_.begin(), sortedIds_.end());
  if (std::adjacent_find(sortedIds_.begin(), sortedIds_.end()) != sortedIds_.end()) {
    throwError(env, StatusCode::kInvalidArgument, "sequences must not hold the same sequence twice");
  }
  TypedView q = argTypedOf(info, 2, "queries", napi_float32_array, "Float32Array");
  TypedView out = argTypedOf(info, 3, "out", napi_float32_array, "Float32Array");
  const size_t expected = static_cast<size_t>(n) * c.queryHeads * c.headDim;
  if (n == 0 || q.length != expected || out.length != expected) {
    throwError(env, StatusCode::kShapeMismatch, "queries and out must hold sequences x queryHeads x headDim elements");
  }
  if (!argIsNullish(info, 4)) {
    TypedView lse = argTypedOf(info, 4, "lse", napi_float32_array, "Float32Array");
    if (lse.length != static_cast<size_t>(n) * c.queryHeads) throwError(env, StatusCode::kShapeMismatch, "lse must hold sequences x queryHeads elements");
    r.lse = static_cast<float*>(lse.data);
  }
  r.tq = 1;
  const uint32_t flags = argFlags(info, 5, "flags", schema::kAttentionFlagMask);
  r.accumulateScores = flags & schema::kAttentionAccumulateScores;
  r.recordQueries = flags & schema::kAttentionRecordQueries;
  if ((flags & schema::kAttentionPrecisionFast) && (flags & schema::kAttentionPrecisionExact)) {
    throwError(env, StatusCode::kInvalidArgument, "flags: precision is either fast or exact");
  }
  if (flags & schema::kAttentionPrecisionFast) r.precision = 1;
  if (flags & schema::kAttentionPrecisionExact) r.precision = 0;
  r.rankPositions = flags & schema::kAttentionRankPositions;
  r.queries = static_cast<const float*>(q.data);
  r.out = static_cast<float*>(out.data);
  r.sparse = sparseSpecArg(info, 6);
  throwIfError(env, cache.attention(batchIds_.data(), n, r));
  return env.Undefined();
}

Napi::Value CacheWrap::stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CacheStats s = live(env).stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("sequences", static_cast<double>(s.sequences));
  o.Set("rows", static_cast<double>(s.rows));
  o.Set("blocksUsed", static_cast<double>(s.blocksUsed));
  o.Set("blocksFree", static_cast<double>(s.blocksFree));
  o.Set("blockBytes", static_cast<double>(s.blockBytes));
  o.Set("committedBytes", static_cast<double>(s.committedBytes));
  o.Set("maxBytes", static_cast<double>(s.maxBytes));
  o.Set("workspaceBytes", static_cast<double>(s.workspaceBytes));
  o.Set("lowRankBytes", static_cast<double>(s.lowRankBytes));
  if (!s.tierBlocks.empty()) {
    Napi::Array tiers = Napi::Array::New(env, s.tierBlocks.size());
    for (uint32_t k = 0; k < s.tierBlocks.size(); ++k) {
      Napi::Object t = Napi::Object::New(env);
      t.Set("blocks", static_cast<double>(s.tierBlocks[k]));
      t.Set("rows", static_cast<double>(s.tierRows[k]));
      t.Set("rowsPerBlock", static_cast<double>(live(env).tiers()[k].rowsPerBlock));
      tiers.Set(k, t);
    }
    o.Set("tiers", tiers);
  }
  return o;
}

Napi::Value CacheWrap::trimWorkspace(const Napi::CallbackInfo& info) {
  live(info.Env()).trimWorkspace();
  return info.Env().Undefined();
}

// Never waits: a compaction still computing holds its own reference to the cache, sees the
// cancel flag at its next batch, rejects with DISPOSED and releases the cache then.
Napi::Value CacheWrap::dispose(const Napi::CallbackInfo& info) {
  if (handle_->cache) handle_->cache->requestCancel();
  handle_->cache.reset();
  handle_->reportMemory();
  return info.Env().Undefined();
}


}  // namespace kvc::binding
