// queryCuda / createCudaBackend / measureCudaCopyBandwidth for builds without nvcc (the
// node-gyp CPU-only addon, or cmake-js when no CUDA toolkit is found): CUDA is reported as
// not compiled in.
#include "cuda_probe.h"
#include "kvc/backend.h"

namespace kvc {

CudaInfo queryCuda() {
  CudaInfo info;
  info.compiled = false;
  info.available = false;
  info.reason = "kvcompact was built without CUDA";
  return info;
}

std::unique_ptr<Backend> createCudaBackend(const BackendOptions& /*options*/, Status* status) {
  if (status) *status = Status(StatusCode::kCudaUnavailable, "cuda unavailable: kvcompact was built without CUDA");
  return nullptr;
}

Status measureCudaCopyBandwidth(uint64_t /*bytes*/, uint32_t /*repeats*/, CopyBandwidth* /*out*/) {
  return Status(StatusCode::kCudaUnavailable, "cuda unavailable: kvcompact was built without CUDA");
}

}  // namespace kvc
