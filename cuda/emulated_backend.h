// The CUDA backend compiled by the host compiler against the SIMT emulator (cuda/emu): the
// same kernel and launcher source as the GPU build, run on the CPU. For parity tests of
// device 'cuda' on machines without a GPU; it is slow and not meant for production use.
#pragma once
#include <memory>

#include "kvc/backend.h"

namespace kvc {

// Always succeeds; Backend::name() is "cuda-emulated". Pool memory is host memory.
std::unique_ptr<Backend> createEmulatedCudaBackend(const BackendOptions& options);

}  // namespace kvc
