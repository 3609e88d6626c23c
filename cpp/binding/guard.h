// No C++ exception crosses into Node: every native entry point runs inside guard() (or, for
// constructors, a function-try-block calling rethrowAsKVCacheError). A Napi::Error passes
// through to node-addon-api, which throws it into JavaScript (or, built with
// NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS, drops it when the environment is shutting down
// and nothing can be thrown); std::bad_alloc becomes OUT_OF_MEMORY and anything else INTERNAL.
#pragma once
#include <napi.h>

#include "errors.h"

namespace kvc::binding {

// Call only inside a catch block: turns the exception being handled into a Napi::Error
// holding a KVCacheError (or an empty Napi::Error when not even that can be made).
[[noreturn]] void rethrowAsKVCacheError(Napi::Env env);

template <typename Body>
auto guard(Napi::Env env, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (...) {
    rethrowAsKVCacheError(env);
  }
}

// A module function F as an entry point: Napi::Function::New(env, guarded<F>).
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] { return F(info); });
}

}  // namespace kvc::binding

// Inside an ObjectWrap class T: KVC_GUARDED_METHODS(T) declares guardedMethod<&T::m>, the
// method m as a guarded entry point for InstanceMethod<>.
#define KVC_GUARDED_METHODS(T)                                                       \
  template <Napi::Value (T::*M)(const Napi::CallbackInfo&)>                          \
  Napi::Value guardedMethod(const Napi::CallbackInfo& info) {                        \
    return ::kvc::binding::guard(info.Env(), [&] { return (this->*M)(info); });      \
  }
