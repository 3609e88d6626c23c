// See errors.h and guard.h.
#include "errors.h"

#include <exception>
#include <new>

#include "addon_data.h"
#include "guard.h"

namespace kvc::binding {

Napi::Value errorValue(Napi::Env env, StatusCode code, const std::string& message) {
  AddonData& data = addonData(env);
  const char* name = statusCodeName(code);
  if (!data.errorFactory.IsEmpty()) {
    return data.errorFactory.Call({Napi::String::New(env, name), Napi::String::New(env, message)});
  }
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, name));
  return error.Value();
}

void throwError(Napi::Env env, StatusCode code, const std::string& message) {
  throw Napi::Error(env, errorValue(env, code, message));
}

namespace {

// Throws a KVCacheError; if making it fails (out of memory again, or an environment that
// can no longer run JavaScript), throws an empty Napi::Error, which node-addon-api turns
// into "no exception" rather than an abort.
[[noreturn]] void throwLastResort(Napi::Env env, StatusCode code, const char* message) {
  try {
    throwError(env, code, message);
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
  }
  throw Napi::Error();
}

}  // namespace

void rethrowAsKVCacheError(Napi::Env env) {
  try {
    throw;
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throwLastResort(env, StatusCode::kOutOfMemory, "out of host memory");
  } catch (const std::exception& e) {
    throwLastResort(env, StatusCode::kInternal, e.what());
  } catch (...) {
    throwLastResort(env, StatusCode::kInternal, "unknown native exception");
  }
}

}  // namespace kvc::binding
