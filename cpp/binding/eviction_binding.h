// Native functions of eviction (policies, scores, recorded queries), registered on the
// module exports by addon.cpp.
#pragma once
#include <napi.h>

namespace kvc::binding {

void registerEviction(Napi::Env env, Napi::Object exports);

}  // namespace kvc::binding
