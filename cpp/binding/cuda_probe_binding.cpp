// See cuda_probe_binding.h. Runs on the event loop: the probe takes well under a second
// and is only called by the GPU check script.
#include "cuda_probe_binding.h"

#include "../../cuda/cuda_probe.h"
#include "args.h"
#include "errors.h"
#include "guard.h"

namespace kvc::binding {

namespace {

Napi::Value cudaCopyBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber()) throwError(env, StatusCode::kInvalidArgument, "bytes must be a number");
  const double bytes = info[0].As<Napi::Number>().DoubleValue();
  if (!(bytes >= 1) || bytes > 9007199254740991.0) {
    throwError(env, StatusCode::kInvalidArgument, "bytes must be a positive integer");
  }
  const uint32_t repeats = argU32(info, 1, "repeats");
  CopyBandwidth b;
  throwIfError(env, measureCudaCopyBandwidth(static_cast<uint64_t>(bytes), repeats, &b));
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytes", static_cast<double>(b.bytes));
  out.Set("repeats", b.repeats);
  out.Set("milliseconds", b.milliseconds);
  out.Set("copyGBps", b.copyGBps);
  out.Set("memoryGBps", b.memoryGBps);
  return out;
}

}  // namespace

void registerCudaProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaCopyBandwidth", Napi::Function::New(env, guarded<cudaCopyBandwidth>));
}

}  // namespace kvc::binding
