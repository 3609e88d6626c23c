// What a JS KVCache and its Sequences share: the core cache, gone after dispose(), and the
// native memory this cache has reported to V8.
#pragma once
#include <node_api.h>

#include <cstdint>
#include <memory>

#include "../core/cache.h"

namespace kvc::binding {

struct CacheHandle {
  // nullptr once disposed. Shared with an asynchronous compaction that still runs, so that
  // dispose() never waits for it: the compaction sees the cancel flag at its next batch and
  // the cache is destroyed when the compaction lets go of it (on the main thread).
  std::shared_ptr<Cache> cache;
  napi_env env = nullptr;
  int64_t reportedBytes = 0;  // told to V8 with napi_adjust_external_memory

  // Tells V8 how much pool memory this cache holds now, so that undisposed caches and
  // dropped sequences make the garbage collector run (and their finalizers free memory)
  // before the process grows by gigabytes. Cheap: one virtual call when nothing changed.
  void reportMemory() {
    const int64_t now = cache ? static_cast<int64_t>(cache->backend().committedBytes()) : 0;
    if (now == reportedBytes || !env) return;
    int64_t total = 0;
    napi_adjust_external_memory(env, now - reportedBytes, &total);
    reportedBytes = now;
  }

  ~CacheHandle() {
    if (reportedBytes && env) {
      int64_t total = 0;
      napi_adjust_external_memory(env, -reportedBytes, &total);
    }
  }
};

}  // namespace kvc::binding
