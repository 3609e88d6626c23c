// Sequence methods of low-rank caches: fitBases(), setBases(layer, kvHead, keys, values),
// bases(layer, kvHead) -> { keys, values } | null. Bases cross as Float32Array [headDim][rank].
#include <string>

#include "adopt.h"
#include "args.h"
#include "errors.h"
#include "sequence_wrap.h"

namespace kvc::binding {

Napi::Value SequenceWrap::fitBases(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  throwIfError(env, live(env).fitBases(id_));
  return env.Undefined();
}

Napi::Value SequenceWrap::setBases(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const CacheConfig& c = cache.config();
  if (!c.lowRank()) throwError(env, StatusCode::kInvalidArgument, "setBases needs a cache created with lowRank");
  const uint32_t layer = argU32(info, 0, "layer");
  const uint32_t head = argU32(info, 1, "kvHead");
  TypedView keys = argTypedOf(info, 2, "keys", napi_float32_array, "Float32Array");
  TypedView values = argTypedOf(info, 3, "values", napi_float32_array, "Float32Array");
  // Values kept unprojected (value rank == headDim) take no value basis: an empty array.
  const size_t expected = static_cast<size_t>(c.headDim) * c.storedDim();
  const size_t expectedValues = c.fullValues() ? 0 : static_cast<size_t>(c.headDim) * c.valueStoredDim();
  if (keys.length != expected || values.length != expectedValues) {
    throwError(env, StatusCode::kShapeMismatch, "bases must hold headDim x rank elements: keys " + std::to_string(expected) +
                                                    ", values " + std::to_string(expectedValues));
  }
  throwIfError(env, cache.setBases(id_, layer, head, static_cast<const float*>(keys.data), static_cast<const float*>(values.data)));
  return env.Undefined();
}

Napi::Value SequenceWrap::bases(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  std::vector<float> keys, values;
  bool has = false;
  throwIfError(env, cache.bases(id_, argU32(info, 0, "layer"), argU32(info, 1, "kvHead"), &keys, &values, &has));
  if (!has) return env.Null();
  const size_t nk = keys.size(), nv = values.size();
  Napi::Object result = Napi::Object::New(env);
  result.Set("keys", Napi::Float32Array::New(env, nk, adoptBuffer(env, std::move(keys)), 0));
  result.Set("values", Napi::Float32Array::New(env, nv, adoptBuffer(env, std::move(values)), 0));
  return result;
}

}  // namespace kvc::binding
