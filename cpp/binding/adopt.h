// Large results cross into JavaScript without a second allocation: the typed array adopts
// the std::vector the native code filled (an external ArrayBuffer that frees it when
// collected). Besides saving a copy, this keeps a host-memory shortage an OUT_OF_MEMORY
// from the native allocation: V8 aborts the process when it cannot allocate an ArrayBuffer.
// Where external buffers are not allowed (some embedders), it falls back to a copy.
#pragma once
#include <napi.h>

#include <cstring>
#include <vector>

namespace kvc::binding {

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
