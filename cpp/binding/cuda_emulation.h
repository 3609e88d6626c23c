// Device 'cuda' in emulation: with KVCOMPACT_CUDA_EMULATION=1 (and an addon built with the
// emulated CUDA backend, i.e. the CMake build), caches with device 'cuda' run the CUDA
// kernels on the CPU through cuda/emu. For parity tests without a GPU; slow by design.
#pragma once
#include "../core/cache.h"

namespace kvc::binding {

// The emulated backend's factory when emulation is requested and compiled in, else nullptr.
BackendFactory cudaEmulationFactory();
bool cudaEmulationCompiled();

}  // namespace kvc::binding
