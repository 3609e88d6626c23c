// Large results cross into JavaScript without a second allocation: the typed array adopts
// the std::vector the native code filled (an external ArrayBuffer that frees it when
// collected). Besides saving a copy, this keeps a host-memory shortage an OUT_OF_MEMORY
// from the native allocation: V8 aborts the process when it cannot allocate an ArrayBuffer.
// Where external buffers are not allowed (some embedders), it falls back to a copy.
// Node marks external ArrayBuffers untransferable (postMessage copies them, or throws
// DataCloneError on Node >= 21), so results documented as transferable (export bytes) use
// transferableCopy instead.
#pragma once
#include <napi.h>

#include <cstring>
#include <string>
#include <vector>

#include "errors.h"

namespace kvc::binding {

// A plain, transferable ArrayBuffer holding a copy of data. It is allocated through the
// JavaScript ArrayBuffer constructor, where a shortage is a RangeError (made OUT_OF_MEMORY
// here) rather than the process abort of napi_create_arraybuffer.
inline Napi::ArrayBuffer transferableCopy(Napi::Env env, const void* data, size_t size) {
  Napi::Value ctor = env.Global().Get("ArrayBuffer");
  Napi::Value made;
  try {
    if (ctor.IsFunction()) made = ctor.As<Napi::Function>().New({Napi::Number::New(env, static_cast<double>(size))});
  } catch (const Napi::Error&) {
    throwError(env, StatusCode::kOutOfMemory, "out of memory for a " + std::to_string(size) + "-byte ArrayBuffer");
  }
  // A replaced global ArrayBuffer: allocate through N-API instead.
  Napi::ArrayBuffer out = !made.IsEmpty() && made.IsArrayBuffer() && made.As<Napi::ArrayBuffer>().ByteLength() == size
                              ? made.As<Napi::ArrayBuffer>()
                              : Napi::ArrayBuffer::New(env, size);
  if (size) std::memcpy(out.Data(), data, size);
  return out;
}

template <typename T>
Napi::ArrayBuffer adoptBuffer(Napi::Env env, std::vector<T>&& data) {
  if (data.empty()) return Napi::ArrayBuffer::New(env, 0);
  auto* owned = new std::vector<T>(std::move(data));
  napi_value buffer;
  const napi_status status = napi_create_external_arraybuffer(
      env, owned->data(), owned->size() * sizeof(T),
      [](napi_env, void*, void* hint) { delete static_cast<std::vector<T>*>(hint); }, owned, &buffer);
  if (status == napi_ok) return Napi::ArrayBuffer(env, buffer);
  // Not allowed here (or failed): copy, and free ours.
  std::vector<T> local(std::move(*owned));
  delete owned;
  Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, local.size() * sizeof(T));
  std::memcpy(copy.Data(), local.data(), local.size() * sizeof(T));
  return copy;
}

}  // namespace kvc::binding
