// Per-environment state of the addon (constructors, the JS error factory, work still running
// off the JS thread), kept in N-API instance data so that the addon is safe to load in
// several worker_threads at once.
#pragma once
#include <napi.h>

#include <unordered_set>

namespace kvc::binding {

// Work that runs off the JS thread (async compaction). When the environment shuts down (a
// worker_thread terminated or exiting) with such work pending, the cleanup hook calls
// abandon(): stop the work, wait for its thread to leave the cache, and make its completion
// (if it still runs) touch nothing.
class PendingWork {
 public:
  virtual ~PendingWork() = default;
  virtual void abandon() noexcept = 0;
};

struct AddonData {
  Napi::FunctionReference cacheConstructor;
  Napi::FunctionReference sequenceConstructor;
  Napi::FunctionReference errorFactory;  // (code, message) => KVCacheError, set by lib/
  std::unordered_set<PendingWork*> pending;  // touched on the JS thread only
};

inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace kvc::binding
