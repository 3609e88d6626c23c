// See errors.h.
#include "errors.h"

#include "addon_data.h"

namespace kvc::binding {

void throwError(Napi::Env env, StatusCode code, const std::string& message) {
  AddonData& data = addonData(env);
  const char* name = statusCodeName(code);
  if (!data.errorFactory.IsEmpty()) {
    Napi::Value error = data.errorFactory.Call({Napi::String::New(env, name), Napi::String::New(env, message)});
    throw Napi::Error(env, error);
  }
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, name));
  throw error;
}

}  // namespace kvc::binding
