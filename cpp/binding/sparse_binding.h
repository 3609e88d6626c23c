// N-API side of sparse decode: the `sparse` attention option as a kvc::SparseSpec.
#pragma once
#include <napi.h>

#include "../core/cache.h"

namespace kvc::binding {

// Argument i: undefined / null (dense attention) or { tokens, sinks?, recent? } with the
// limits of schema/options.json (section sparse).
SparseSpec sparseSpecArg(const Napi::CallbackInfo& info, size_t i);

}  // namespace kvc::binding
