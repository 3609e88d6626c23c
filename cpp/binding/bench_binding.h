// Measurement helpers for the benchmarks (not part of the public API).
#pragma once
#include <napi.h>

namespace kvc::binding {

void registerBench(Napi::Env env, Napi::Object exports);

}  // namespace kvc::binding
