// See sparse_binding.h; also NativeSequence.sparseSelection (declared in sequence_wrap.h).
#include "sparse_binding.h"

#include <cstring>

#include "args.h"
#include "errors.h"
#include "kvc/generated/schema.h"
#include "sequence_wrap.h"

namespace kvc::binding {

SparseSpec sparseSpecArg(const Napi::CallbackInfo& info, size_t i) {
  SparseSpec spec;
  if (argIsNullish(info, i)) return spec;
  Napi::Env env = info.Env();
  Napi::Object o = specArg(env, info[i], "sparse");
  namespace L = schema::sparse;
  spec.tokens = u32Field(env, o, "tokens", kRequired, L::kTokensMin, L::kTokensMax);
  spec.sinks = u32Field(env, o, "sinks", L::kSinksDefault, L::kSinksMin, L::kSinksMax);
  spec.recent = u32Field(env, o, "recent", L::kRecentDefault, L::kRecentMin, L::kRecentMax);
  return spec;
}

// sparseSelection(layer, queries, tq, sparse) -> [{ blocks: Int32Array, bounds: Float32Array }]
// per kv head: the blocks (indices into the stream) attention would read, and every block's bound.
Napi::Value SequenceWrap::sparseSelection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const CacheConfig& c = cache.config();
  const uint32_t layer = argU32(info, 0, "layer");
  TypedView q = argTypedOf(info, 1, "queries", napi_float32_array, "Float32Array");
  const uint32_t tq = argU32(info, 2, "tq");
  if (tq == 0 || q.length != static_cast<size_t>(tq) * c.queryHeads * c.headDim) {
    throwError(env, StatusCode::kShapeMismatch, "queries must hold tq x queryHeads x headDim elements");
  }
  if (argIsNullish(info, 3)) throwError(env, StatusCode::kInvalidArgument, "sparse must be an object");
  const SparseSpec spec = sparseSpecArg(info, 3);
  std::vector<std::vector<uint32_t>> picked;
  std::vector<std::vector<float>> bounds;
  throwIfError(env, cache.sparseSelection(id_, layer, static_cast<const float*>(q.data), tq, spec, &picked, &bounds));
  Napi::Array result = Napi::Array::New(env, picked.size());
  for (size_t h = 0; h < picked.size(); ++h) {
    Napi::Int32Array blocks = Napi::Int32Array::New(env, picked[h].size());
    for (size_t j = 0; j < picked[h].size(); ++j) blocks[j] = static_cast<int32_t>(picked[h][j]);
    Napi::Float32Array b = Napi::Float32Array::New(env, bounds[h].size());
    if (!bounds[h].empty()) std::memcpy(b.Data(), bounds[h].data(), 4 * bounds[h].size());
    Napi::Object o = Napi::Object::New(env);
    o.Set("blocks", blocks);
    o.Set("bounds", b);
    result.Set(static_cast<uint32_t>(h), o);
  }
  return result;
}

}  // namespace kvc::binding
