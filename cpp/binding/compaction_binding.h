// Native functions of Attention Matching compaction, registered on the module exports by
// addon.cpp: compact() (a Promise; the work runs on the libuv pool) and compactSync().
#pragma once
#include <napi.h>

namespace kvc::binding {

void registerCompaction(Napi::Env env, Napi::Object exports);

}  // namespace kvc::binding
