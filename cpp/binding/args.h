// Argument conversion for the binding: typed arrays to pointers, numbers to integers, enum
// names to indices (the tables of kvc/generated/schema.h), each failure a KVCacheError naming
// the argument. lib/ validates first; these checks are the second line that keeps a wrong
// call from the native side from ever crashing, and they accept exactly what lib/ accepts.
#pragma once
#include <napi.h>

#include <cstdint>
#include <limits>
#include <string>

#include "errors.h"
#include "kvc/generated/schema.h"

namespace kvc::binding {

inline bool isU32(double v) { return v >= 0 && v <= 4294967295.0 && v == static_cast<double>(static_cast<uint64_t>(v)); }

inline uint32_t argU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) throwError(info.Env(), StatusCode::kInvalidArgument, std::string(name) + " must be a number");
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!isU32(v)) throwError(info.Env(), StatusCode::kInvalidArgument, std::string(name) + " must be a non-negative integer");
  return static_cast<uint32_t>(v);
}

// Flag bits: an unsigned integer with no bit outside `mask` (unknown bits are an error, so a
// flag added later is never silently ignored by an older addon).
inline uint32_t argFlags(const Napi::CallbackInfo& info, size_t i, const char* name, uint32_t mask) {
  const uint32_t flags = i < info.Length() && !info[i].IsUndefined() ? argU32(info, i, name) : 0;
  if (flags & ~mask) {
    throwError(info.Env(), StatusCode::kInvalidArgument,
               std::string(name) + " has unknown bits (" + std::to_string(flags & ~mask) + "); known: " + std::to_string(mask));
  }
  return flags;
}

struct TypedView {
  void* data = nullptr;
  size_t length = 0;  // elements
  napi_typedarray_type type = napi_uint8_array;
};

// The data pointer comes from napi_get_typedarray_info itself, which works for typed arrays on
// an ArrayBuffer and on a SharedArrayBuffer alike (Napi::TypedArray::ArrayBuffer() rejects the
// latter). A Proxy of a typed array is not a typed array.
inline bool typedView(napi_env env, napi_value value, TypedView* out) {
  bool is = false;
  if (napi_is_typedarray(env, value, &is) != napi_ok || !is) return false;
  napi_value buffer;
  size_t offset = 0;
  return napi_get_typedarray_info(env, value, &out->type, &out->length, &out->data, &buffer, &offset) == napi_ok;
}

inline TypedView argTyped(const Napi::CallbackInfo& info, size_t i, const char* name) {
  TypedView v;
  if (i >= info.Length() || !typedView(info.Env(), info[i], &v)) {
    throwError(info.Env(), StatusCode::kInvalidArgument, std::string(name) + " must be a typed array");
  }
  return v;
}

inline TypedView argTypedOf(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type type,
                            const char* typeName) {
  TypedView v = argTyped(info, i, name);
  if (v.type != type) throwError(info.Env(), StatusCode::kInvalidArgument, std::string(name) + " must be a " + typeName);
  return v;
}

// A typed-array field of a spec object of the given type, or false when undefined or null.
inline bool typedField(Napi::Env env, Napi::Object o, const char* name, napi_typedarray_type type, const char* typeName,
                       TypedView* out) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!typedView(env, v, out) || out->type != type) {
    throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be a " + typeName);
  }
  return true;
}

// The fallback of a required field (a field with no default).
inline constexpr double kRequired = std::numeric_limits<double>::quiet_NaN();

// Fields of the flat spec objects lib/ builds for the cache, eviction and compaction.
// `fallback` is used when the field is undefined; a NaN fallback makes the field required.
inline double numberField(Napi::Env env, Napi::Object o, const char* name, double fallback, double min = -1.7976931348623157e308,
                          double max = 1.7976931348623157e308) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) {
    if (fallback != fallback) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " is required");
    return fallback;
  }
  if (!v.IsNumber()) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= min && d <= max)) {
    throwError(env, StatusCode::kInvalidArgument,
               std::string("spec.") + name + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return d;
}

inline uint32_t u32Field(Napi::Env env, Napi::Object o, const char* name, double fallback, uint32_t min = 0,
                         uint32_t max = 0xffffffffu) {
  const double d = numberField(env, o, name, fallback);
  if (!isU32(d) || d < min || d > max) {
    throwError(env, StatusCode::kInvalidArgument,
               std::string("spec.") + name + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return static_cast<uint32_t>(d);
}

inline bool boolField(Napi::Env env, Napi::Object o, const char* name, bool fallback) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// An enum crosses the boundary as its name (schema/options.json); returns its index.
// fallback < 0: the field is required.
inline int enumField(Napi::Env env, Napi::Object o, const char* name, const char* const* names, int count, int fallback) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() && fallback >= 0) return fallback;
  const int i = v.IsString() ? schema::enumIndex(names, count, v.As<Napi::String>().Utf8Value().c_str()) : -1;
  if (i < 0) {
    std::string known;
    for (int k = 0; k < count; ++k) known += (k ? ", '" : "'") + std::string(names[k]) + "'";
    throwError(env, StatusCode::kInvalidArgument, std::string("spec.") + name + " must be one of " + known);
  }
  return i;
}

// A spec argument: a plain object (not an array, not a function).
inline Napi::Object specArg(Napi::Env env, Napi::Value value, const char* name) {
  if (!value.IsObject() || value.IsArray() || value.IsFunction() || value.IsTypedArray()) {
    throwError(env, StatusCode::kInvalidArgument, std::string(name) + " must be an object");
  }
  return value.As<Napi::Object>();
}

inline bool argIsNullish(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsNull() || info[i].IsUndefined();
}

}  // namespace kvc::binding
