// Eviction functions on the module exports (filled in by the eviction work).
#include "eviction_binding.h"

namespace kvc::binding {

void registerEviction(Napi::Env, Napi::Object) {}

}  // namespace kvc::binding
