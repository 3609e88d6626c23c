// See errors.h.
#include "errors.h"

#include "addon_data.h"

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

}  // namespace kvc::binding
