// buildInfo(): how this .node was built (build system, compiler, CUDA architectures, C++
// runtime linkage), for `npx kvcompact doctor` and bug reports. Not part of the public API.
#pragma once
#include <napi.h>

namespace kvc::binding {

void registerBuildInfo(Napi::Env env, Napi::Object exports);

}  // namespace kvc::binding
