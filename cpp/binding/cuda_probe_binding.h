// cudaCopyBandwidth(bytes, repeats) for `npm run gpu-check`: the device's copy bandwidth,
// measured with cudaEvents around device-to-device cudaMemcpy (cuda/cuda_probe.h). Throws
// CUDA_UNAVAILABLE without a usable GPU. Not part of the public API.
#pragma once
#include <napi.h>

namespace kvc::binding {

void registerCudaProbe(Napi::Env env, Napi::Object exports);

}  // namespace kvc::binding
