// See cache_wrap.h.
#include "cache_wrap.h"

#include <string>

#include "addon_data.h"
#include "args.h"
#include "cuda_emulation.h"
#include "errors.h"
#include "guard.h"
#include "sequence_wrap.h"

namespace kvc::binding {

namespace {

uint32_t optionU32(Napi::Env env, Napi::Object o, const char* name, uint32_t fallback) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throwError(env, StatusCode::kInvalidArgument, std::string(name) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    throwError(env, StatusCode::kInvalidArgument, std::string(name) + " must be a non-negative integer");
  }
  return static_cast<uint32_t>(d);
}

Storage storageOf(Napi::Env env, Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return Storage::kF16;
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  for (int i = 0; i < kStorageCount; ++i) {
    if (s == storageName(static_cast<Storage>(i))) return static_cast<Storage>(i);
  }
  throwError(env, StatusCode::kInvalidArgument, std::string(name) + " must be one of 'f32', 'f16', 'bf16', 'int8', 'int4'");
}

}  // namespace

Napi::Function CacheWrap::define(Napi::Env env) {
  return DefineClass(env, "NativeCache",
                     {InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::createSequence>>("createSequence"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::importSequence>>("importSequence"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::attentionBatch>>("attentionBatch"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::stats>>("stats"),
                      InstanceMethod<&CacheWrap::guardedMethod<&CacheWrap::dispose>>("dispose")});
}

// new NativeCache({ layers, kvHeads, headDim, queryHeads, blockSize, keys, values, groupSize,
//                   rotateKeys, rotateValues, rotationSeed, maxBytes, threads, device })
CacheWrap::CacheWrap(const Napi::CallbackInfo& info) try : Napi::ObjectWrap<CacheWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throwError(env, StatusCode::kInvalidArgument, "options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  CacheConfig c;
  c.layers = optionU32(env, o, "layers", 0);
  c.kvHeads = optionU32(env, o, "kvHeads", 0);
  c.headDim = optionU32(env, o, "headDim", 0);
  c.queryHeads = optionU32(env, o, "queryHeads", c.kvHeads);
  c.blockSize = optionU32(env, o, "blockSize", 32);
  c.keys = storageOf(env, o, "keys");
  c.values = storageOf(env, o, "values");
  c.groupSize = optionU32(env, o, "groupSize", c.headDim < 32 ? c.headDim : 32);
  c.rotateKeys = o.Get("rotateKeys").ToBoolean();
  c.rotateValues = o.Get("rotateValues").ToBoolean();
  c.rotationSeed = optionU32(env, o, "rotationSeed", c.rotationSeed);
  Napi::Value maxBytes = o.Get("maxBytes");
  if (!maxBytes.IsUndefined()) {
    if (!maxBytes.IsNumber()) throwError(env, StatusCode::kInvalidArgument, "maxBytes must be a number");
    const double d = maxBytes.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0) throwError(env, StatusCode::kInvalidArgument, "maxBytes must be a non-negative integer");
    c.maxBytes = static_cast<uint64_t>(d);
  }
  c.threads = optionU32(env, o, "threads", 0);
  c.queryReservoir = optionU32(env, o, "queryReservoir", c.queryReservoir);
  c.recentQueries = optionU32(env, o, "recentQueries", c.recentQueries);
  Napi::Value device = o.Get("device");
  if (!device.IsUndefined()) {
    if (!device.IsString()) throwError(env, StatusCode::kInvalidArgument, "device must be a string");
    c.device = device.As<Napi::String>().Utf8Value();
  }
  handle_ = std::make_shared<CacheHandle>();
  throwIfError(env, createCache(c, &handle_->cache, cudaEmulationFactory()));
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
    SequenceWrap* s = v.IsObject() ? SequenceWrap::Unwrap(v.As<Napi::Object>()) : nullptr;
    if (!s) throwError(env, StatusCode::kInvalidArgument, "sequences[" + std::to_string(i) + "] is not a Sequence");
    if (s->handle() != handle_.get()) throwError(env, StatusCode::kInvalidArgument, "sequences[" + std::to_string(i) + "] belongs to another cache");
    batchIds_[i] = s->id();
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
  const uint32_t flags = info.Length() > 5 ? argU32(info, 5, "flags") : 0;
  r.accumulateScores = flags & 1;
  r.recordQueries = flags & 2;
  r.queries = static_cast<const float*>(q.data);
  r.out = static_cast<float*>(out.data);
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
  return o;
}

Napi::Value CacheWrap::dispose(const Napi::CallbackInfo& info) {
  handle_->cache.reset();
  return info.Env().Undefined();
}


}  // namespace kvc::binding
