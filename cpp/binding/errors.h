// The one place where a kvc::Status becomes a JavaScript exception: a KVCacheError made
// by the factory lib/ registers, carrying the status code name as `code`.
#pragma once
#include <napi.h>

#include <string>

#include "kvc/status.h"

namespace kvc::binding {

// A KVCacheError value (not thrown), e.g. for promise rejections.
Napi::Value errorValue(Napi::Env env, StatusCode code, const std::string& message);
[[noreturn]] void throwError(Napi::Env env, StatusCode code, const std::string& message);
inline void throwIfError(Napi::Env env, const Status& status) {
  if (!status.isOk()) throwError(env, status.code(), status.message());
}

}  // namespace kvc::binding
