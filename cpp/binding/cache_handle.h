// What a JS KVCache and its Sequences share: the core cache, gone after dispose().
#pragma once
#include <memory>

#include "../core/cache.h"

namespace kvc::binding {

struct CacheHandle {
  std::unique_ptr<Cache> cache;  // nullptr once disposed
};

}  // namespace kvc::binding
