// See sequence_wrap.h.
#include "sequence_wrap.h"

#include <cstring>
#include <string>

#include "adopt.h"
#include "addon_data.h"
#include "args.h"
#include "sparse_binding.h"
#include "errors.h"
#include "guard.h"
#include "kvc/generated/schema.h"
#include "type_tags.h"

namespace kvc::binding {

namespace {
struct NewSequence {
  std::shared_ptr<CacheHandle> handle;
  uint64_t id;
};
}  // namespace

Napi::Function SequenceWrap::define(Napi::Env env) {
  return DefineClass(env, "NativeSequence",
                     {InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::append>>("append"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::attention>>("attention"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::length>>("length"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::lengths>>("lengths"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::nextPosition>>("nextPosition"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::fork>>("fork"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::truncate>>("truncate"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::free>>("free"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::read>>("read"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::exportBytes>>("export"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::isFreed>>("isFreed"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::resetScores>>("resetScores"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::sparseSelection>>("sparseSelection"),

                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::fitBases>>("fitBases"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::setBases>>("setBases"),
                      InstanceMethod<&SequenceWrap::guardedMethod<&SequenceWrap::bases>>("bases")});
}

Napi::Object SequenceWrap::create(Napi::Env env, std::shared_ptr<CacheHandle> handle, uint64_t id) {
  NewSequence init{std::move(handle), id};
  Napi::External<NewSequence> external = Napi::External<NewSequence>::New(env, &init);
  external.TypeTag(&kNewSequenceTag);
  return addonData(env).sequenceConstructor.New({external});
}

SequenceWrap::SequenceWrap(const Napi::CallbackInfo& info) try : Napi::ObjectWrap<SequenceWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal() || !info[0].As<Napi::External<NewSequence>>().CheckTypeTag(&kNewSequenceTag)) {
    throwError(info.Env(), StatusCode::kInvalidArgument, "sequences are created by KVCache.createSequence()");
  }
  NewSequence* init = info[0].As<Napi::External<NewSequence>>().Data();
  handle_ = init->handle;
  id_ = init->id;
  info.This().As<Napi::Object>().TypeTag(&kSequenceTag);
} catch (...) {
  rethrowAsKVCacheError(info.Env());
}

SequenceWrap::~SequenceWrap() {
  // A sequence dropped without free() gives its blocks back when it is collected (a busy one
  // cannot be collected: its compaction holds a reference to it).
  // A finalizer must not throw (it may run while the environment shuts down).
  try {
    if (handle_ && handle_->cache) handle_->cache->freeSequence(id_);
  } catch (...) {
  }
}

SequenceWrap* SequenceWrap::fromArg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  // The type tag, not the prototype chain: Object.create(NativeSequence.prototype) passes
  // instanceof but holds no native sequence.
  if (info.Length() <= i || !info[i].IsObject() || !info[i].As<Napi::Object>().CheckTypeTag(&kSequenceTag)) {
    throwError(env, StatusCode::kInvalidArgument, "sequence must be a NativeSequence");
  }
  return Unwrap(info[i].As<Napi::Object>());
}

Cache& SequenceWrap::live(Napi::Env env) {
  if (!handle_->cache) throwError(env, StatusCode::kDisposed, "the cache has been disposed");
  if (!handle_->cache->hasSequence(id_)) throwError(env, StatusCode::kDisposed, "the sequence has been freed");
  return *handle_->cache;
}

// append(layer, keys, values, positions | null)
Napi::Value SequenceWrap::append(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const CacheConfig& c = cache.config();
  const uint32_t layer = argU32(info, 0, "layer");
  TypedView keys = argTyped(info, 1, "keys");
  TypedView values = argTyped(info, 2, "values");
  if (keys.type != values.type) throwError(env, StatusCode::kInvalidArgument, "keys and values must be the same array type");
  AppendInput in;
  if (keys.type == napi_float32_array) {
    in.type = InputType::kF32;
  } else if (keys.type == napi_uint16_array) {
    in.type = InputType::kF16;
  } else {
    throwError(env, StatusCode::kInvalidArgument, "keys and values must be Float32Array or Uint16Array (f16 bits)");
  }
  const size_t rowElems = static_cast<size_t>(c.kvHeads) * c.headDim;
  if (keys.length == 0 || keys.length % rowElems != 0 || values.length != keys.length) {
    throwError(env, StatusCode::kShapeMismatch,
               "keys and values must both hold T x kvHeads x headDim = T x " + std::to_string(rowElems) +
                   " elements (got " + std::to_string(keys.length) + " and " + std::to_string(values.length) + ")");
  }
  in.tokens = static_cast<uint32_t>(keys.length / rowElems);
  in.keys = keys.data;
  in.values = values.data;
  if (!argIsNullish(info, 3)) {
    TypedView pos = argTypedOf(info, 3, "positions", napi_int32_array, "Int32Array");
    if (pos.length != in.tokens) throwError(env, StatusCode::kShapeMismatch, "positions must hold one entry per token");
    in.positions = static_cast<const int32_t*>(pos.data);
  }
  throwIfError(env, cache.append(id_, layer, in));
  handle_->reportMemory();
  return env.Undefined();
}

// attention(layer, queries, tq, out, lse | null, flags): flags bit 0 = accumulateScores, bit 1 = recordQueries
Napi::Value SequenceWrap::attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const CacheConfig& c = cache.config();
  AttentionRequest r;
  r.layer = argU32(info, 0, "layer");
  TypedView q = argTypedOf(info, 1, "queries", napi_float32_array, "Float32Array");
  r.tq = argU32(info, 2, "tq");
  TypedView out = argTypedOf(info, 3, "out", napi_float32_array, "Float32Array");
  const size_t expected = static_cast<size_t>(r.tq) * c.queryHeads * c.headDim;
  if (r.tq == 0 || q.length != expected || out.length != expected) {
    throwError(env, StatusCode::kShapeMismatch, "queries and out must hold tq x queryHeads x headDim elements");
  }
  if (!argIsNullish(info, 4)) {
    TypedView lse = argTypedOf(info, 4, "lse", napi_float32_array, "Float32Array");
    if (lse.length != static_cast<size_t>(r.tq) * c.queryHeads) throwError(env, StatusCode::kShapeMismatch, "lse must hold tq x queryHeads elements");
    r.lse = static_cast<float*>(lse.data);
  }
  r.queries = static_cast<const float*>(q.data);
  r.out = static_cast<float*>(out.data);
  const uint32_t flags = argFlags(info, 5, "flags", schema::kAttentionFlagMask);
  r.accumulateScores = flags & schema::kAttentionAccumulateScores;
  r.recordQueries = flags & schema::kAttentionRecordQueries;
  if ((flags & schema::kAttentionPrecisionFast) && (flags & schema::kAttentionPrecisionExact)) {
    throwError(env, StatusCode::kInvalidArgument, "flags: precision is either fast or exact");
  }
  if (flags & schema::kAttentionPrecisionFast) r.precision = 1;
  if (flags & schema::kAttentionPrecisionExact) r.precision = 0;
  r.rankPositions = flags & schema::kAttentionRankPositions;
  r.sparse = sparseSpecArg(info, 6);
  throwIfError(env, cache.attention(&id_, 1, r));
  return env.Undefined();
}

Napi::Value SequenceWrap::length(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const uint32_t layer = argU32(info, 0, "layer");
  const uint32_t head = argU32(info, 1, "kvHead");
  if (head >= cache.config().kvHeads) throwError(env, StatusCode::kInvalidArgument, "kvHead " + std::to_string(head) + " is out of range");
  int32_t lengths[1024];
  throwIfError(env, cache.lengths(id_, layer, lengths));
  return Napi::Number::New(env, lengths[head]);
}

Napi::Value SequenceWrap::lengths(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const uint32_t layer = argU32(info, 0, "layer");
  Napi::Int32Array out = Napi::Int32Array::New(env, cache.config().kvHeads);
  throwIfError(env, cache.lengths(id_, layer, out.Data()));
  return out;
}

Napi::Value SequenceWrap::nextPosition(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  int32_t next = 0;
  throwIfError(env, cache.nextPosition(id_, argU32(info, 0, "layer"), &next));
  return Napi::Number::New(env, next);
}

Napi::Value SequenceWrap::fork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  uint64_t child = 0;
  throwIfError(env, cache.fork(id_, &child));
  return create(env, handle_, child);
}

Napi::Value SequenceWrap::truncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const uint32_t n = argU32(info, 0, "n");
  if (n > INT32_MAX) throwError(env, StatusCode::kInvalidArgument, "n is too large");
  throwIfError(env, cache.truncate(id_, static_cast<int32_t>(n)));
  return env.Undefined();
}

Napi::Value SequenceWrap::free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (handle_->cache) throwIfError(env, handle_->cache->freeSequence(id_));
  return env.Undefined();
}

Napi::Value SequenceWrap::resetScores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  throwIfError(env, live(env).resetScores(id_));
  return env.Undefined();
}

Napi::Value SequenceWrap::isFreed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !handle_->cache || !handle_->cache->hasSequence(id_));
}

Napi::Value SequenceWrap::read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  RowsOut rows;
  throwIfError(env, cache.read(id_, argU32(info, 0, "layer"), argU32(info, 1, "kvHead"), &rows));
  const size_t nk = rows.keys.size(), nv = rows.values.size(), nb = rows.beta.size(), np = rows.positions.size();
  Napi::Float32Array keys = Napi::Float32Array::New(env, nk, adoptBuffer(env, std::move(rows.keys)), 0);
  Napi::Float32Array values = Napi::Float32Array::New(env, nv, adoptBuffer(env, std::move(rows.values)), 0);
  Napi::Float32Array beta = Napi::Float32Array::New(env, nb, adoptBuffer(env, std::move(rows.beta)), 0);
  Napi::Int32Array positions = Napi::Int32Array::New(env, np, adoptBuffer(env, std::move(rows.positions)), 0);
  Napi::Object result = Napi::Object::New(env);
  result.Set("keys", keys);
  result.Set("values", values);
  result.Set("beta", beta);
  result.Set("positions", positions);
  return result;
}

Napi::Value SequenceWrap::exportBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  std::vector<uint8_t> bytes;
  throwIfError(env, cache.exportSequence(id_, &bytes));
  // Transferable: the README tells to move exports between threads by transferring them.
  const size_t size = bytes.size();
  Napi::ArrayBuffer buffer = transferableCopy(env, bytes.data(), size);
  bytes = std::vector<uint8_t>();
  return Napi::Uint8Array::New(env, size, buffer, 0);
}

}  // namespace kvc::binding
