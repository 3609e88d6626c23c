// CRC-32 of the export format for TypeScript (PrefixStore verifies and joins stored bytes).
#pragma once
#include <napi.h>

namespace kvc::binding {

void registerChecksum(Napi::Env env, Napi::Object exports);

}  // namespace kvc::binding
