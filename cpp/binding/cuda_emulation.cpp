// See cuda_emulation.h. This file is compiled once per addon: with KVC_WITH_CUDA_EMULATION for
// the test addon, without it for the production addon (CMakeLists.txt, kvc_add_addon).
#include "cuda_emulation.h"

#include <cstdlib>
#include <cstring>

#include "guard.h"

#ifdef KVC_WITH_CUDA_EMULATION
#include "../../cuda/emu/runtime.h"
#include "../../cuda/emulated_backend.h"
#endif

namespace kvc::binding {

namespace {

bool emulationRequested() {
  const char* flag = std::getenv("KVCOMPACT_CUDA_EMULATION");
  return flag && std::strcmp(flag, "1") == 0;
}

#ifdef KVC_WITH_CUDA_EMULATION
// cudaTransferStats(): the bytes and calls of host <-> device copies made by emulated CUDA
// backends since the last reset (all caches of the process).
Napi::Value transferStats(const Napi::CallbackInfo& info) {
  const kvc_emu::TransferStats s = kvc_emu::transferStats();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("hostToDeviceBytes", static_cast<double>(s.hostToDeviceBytes));
  out.Set("hostToDeviceCalls", static_cast<double>(s.hostToDeviceCalls));
  out.Set("deviceToHostBytes", static_cast<double>(s.deviceToHostBytes));
  out.Set("deviceToHostCalls", static_cast<double>(s.deviceToHostCalls));
  return out;
}

Napi::Value resetTransferStats(const Napi::CallbackInfo& info) {
  kvc_emu::resetTransferStats();
  return info.Env().Undefined();
}
#endif

}  // namespace

bool cudaEmulationCompiled() {
#ifdef KVC_WITH_CUDA_EMULATION
  return true;
#else
  return false;
#endif
}

BackendFactory cudaEmulationFactory() {
#ifdef KVC_WITH_CUDA_EMULATION
  if (emulationRequested()) return &createEmulatedCudaBackend;
#endif
  return nullptr;
}

CudaInfo cudaDeviceInfo() {
  CudaInfo c = queryCuda();
  if (cudaEmulationFactory()) {
    c.available = true;
    c.reason.clear();
    c.deviceName = "emulated on the CPU (KVCOMPACT_CUDA_EMULATION=1, test build)";
    c.deviceCount = 1;
  } else if (!cudaEmulationCompiled() && emulationRequested() && !c.available) {
    // Say why the variable had no effect instead of leaving the user to wonder.
    c.reason += " (KVCOMPACT_CUDA_EMULATION is ignored: the CUDA emulator is only in the test build, "
                "loaded with KVCOMPACT_NATIVE=test)";
  }
  return c;
}

void registerCudaEmulation(Napi::Env env, Napi::Object exports) {
#ifdef KVC_WITH_CUDA_EMULATION
  exports.Set("cudaTransferStats", Napi::Function::New(env, guarded<transferStats>));
  exports.Set("resetCudaTransferStats", Napi::Function::New(env, guarded<resetTransferStats>));
#else
  (void)env;
  (void)exports;
#endif
}

}  // namespace kvc::binding
