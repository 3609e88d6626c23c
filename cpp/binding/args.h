// Argument conversion for the binding: typed arrays to pointers, numbers to integers,
// each failure a KVCacheError naming the argument. lib/ validates first; these checks are
// the cheap second line that keeps a wrong call from the native side from ever crashing.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

#include "errors.h"

namespace kvc::binding {

inline uint32_t argU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) throwError(info.Env(), StatusCode::kInvalidArgument, std::string(name) + " must be a number");
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 4294967295.0) || v != static_cast<double>(static_cast<uint64_t>(v))) {
    throwError(info.Env(), StatusCode::kInvalidArgument, std::string(name) + " must be a non-negative integer");
  }
  return static_cast<uint32_t>(v);
}

struct TypedView {
  void* data = nullptr;
  size_t length = 0;  // elements
  napi_typedarray_type type = napi_uint8_array;
};

inline TypedView argTyped(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsTypedArray()) throwError(info.Env(), StatusCode::kInvalidArgument, std::string(name) + " must be a typed array");
  Napi::TypedArray a = info[i].As<Napi::TypedArray>();
  TypedView v;
  v.type = a.TypedArrayType();
  v.length = a.ElementLength();
  Napi::ArrayBuffer buffer = a.ArrayBuffer();
  v.data = static_cast<uint8_t*>(buffer.Data()) + a.ByteOffset();
  return v;
}

inline TypedView argTypedOf(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type type,
                            const char* typeName) {
  TypedView v = argTyped(info, i, name);
  if (v.type != type) throwError(info.Env(), StatusCode::kInvalidArgument, std::string(name) + " must be a " + typeName);
  return v;
}

// Fields of the flat spec objects lib/ builds for eviction and compaction.
inline double numberField(Napi::Env env, Napi::Object o, const char* name, double fallback) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

inline uint32_t u32Field(Napi::Env env, Napi::Object o, const char* name, uint32_t fallback) {
  const double d = numberField(env, o, name, fallback);
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be a non-negative integer");
  }
  return static_cast<uint32_t>(d);
}

inline bool argIsNullish(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsNull() || info[i].IsUndefined();
}

}  // namespace kvc::binding
