// Native functions of background maintenance (lib/maintain.ts), registered on the module
// exports by addon.cpp: snapshot(), replacePrefix() and sequenceUsage().
#pragma once
#include <napi.h>

namespace kvc::binding {

void registerMaintain(Napi::Env env, Napi::Object exports);

}  // namespace kvc::binding
