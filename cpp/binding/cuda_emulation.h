// Device 'cuda' in emulation, for tests only. The test addon (kvcompact_test.node, CMake
// target kvcompact_test, compiled with KVC_WITH_CUDA_EMULATION) runs caches with device
// 'cuda' on the CPU through cuda/emu when KVCOMPACT_CUDA_EMULATION=1, and exports the
// emulator's copy counters. The production addon (kvcompact.node) contains no emulator: it
// ignores the variable and says so in the reason CUDA is unavailable.
#pragma once
#include <napi.h>

#include "../core/cache.h"
#include "kvc/backend.h"

namespace kvc::binding {

// The emulated backend's factory when this is the test build and emulation is requested,
// else nullptr (device 'cuda' then means the real GPU).
BackendFactory cudaEmulationFactory();
// True in the test build.
bool cudaEmulationCompiled();
// queryCuda() as this addon reports it: the emulator stands in for device 0 when active.
CudaInfo cudaDeviceInfo();
// Test build: adds cudaTransferStats() and resetCudaTransferStats(). Production: nothing.
void registerCudaEmulation(Napi::Env env, Napi::Object exports);

}  // namespace kvc::binding
