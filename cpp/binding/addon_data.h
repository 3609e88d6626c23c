// Per-environment state of the addon (constructors, the JS error factory), kept in N-API
// instance data so that the addon is safe to load in several worker_threads at once.
#pragma once
#include <napi.h>

namespace kvc::binding {

struct AddonData {
  Napi::FunctionReference cacheConstructor;
  Napi::FunctionReference sequenceConstructor;
  Napi::FunctionReference errorFactory;  // (code, message) => KVCacheError, set by lib/
};

inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace kvc::binding
