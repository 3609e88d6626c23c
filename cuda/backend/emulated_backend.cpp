// Factory of the emulated CUDA backend (built into kvc_cuda_emu only).
#include "../emulated_backend.h"

#include "cuda_backend.h"

namespace kvc {

std::unique_ptr<Backend> createEmulatedCudaBackend(const BackendOptions& /*options*/) {
  return cuda_emu::makeBackend("cuda-emulated");
}

}  // namespace kvc
