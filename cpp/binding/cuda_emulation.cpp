// See cuda_emulation.h.
#include "cuda_emulation.h"

#include <cstdlib>
#include <cstring>

#ifdef KVC_WITH_CUDA_EMULATION
#include "../../cuda/emulated_backend.h"
#endif

namespace kvc::binding {

bool cudaEmulationCompiled() {
#ifdef KVC_WITH_CUDA_EMULATION
  return true;
#else
  return false;
#endif
}

BackendFactory cudaEmulationFactory() {
#ifdef KVC_WITH_CUDA_EMULATION
  const char* flag = std::getenv("KVCOMPACT_CUDA_EMULATION");
  if (flag && std::strcmp(flag, "1") == 0) return &createEmulatedCudaBackend;
#endif
  return nullptr;
}

}  // namespace kvc::binding
