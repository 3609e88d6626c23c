// kvc::queryCuda and kvc::createCudaBackend for the nvcc build (static CUDA runtime). On a
// machine without driver or GPU they report why, through CudaInfo::reason, and never abort.
#include <string>

#include "cuda_backend.h"

namespace kvc {

namespace {

// The oldest architecture the kernels are compiled for (CMAKE_CUDA_ARCHITECTURES 80;90).
constexpr int kMinComputeCapability = 80;

std::string errorText(const char* call, cudaError_t e) {
  cudaGetLastError();
  return std::string(call) + " failed: " + cudaGetErrorString(e);
}

}  // namespace

CudaInfo queryCuda() {
  CudaInfo info;
  info.compiled = true;
  cudaRuntimeGetVersion(&info.runtimeVersion);
  cudaError_t e = cudaDriverGetVersion(&info.driverVersion);
  if (e != cudaSuccess) {
    info.reason = errorText("cudaDriverGetVersion", e);
    return info;
  }
  if (info.driverVersion == 0) {
    info.reason = "no CUDA driver is installed";
    return info;
  }
  e = cudaGetDeviceCount(&info.deviceCount);
  if (e != cudaSuccess) {
    info.deviceCount = 0;
    info.reason = errorText("cudaGetDeviceCount", e);
    return info;
  }
  if (info.deviceCount == 0) {
    info.reason = "no CUDA device found";
    return info;
  }
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, 0);
  if (e != cudaSuccess) {
    info.reason = errorText("cudaGetDeviceProperties", e);
    return info;
  }
  info.deviceName = prop.name;
  info.totalMemory = prop.totalGlobalMem;
  info.computeCapability = prop.major * 10 + prop.minor;
  if (info.computeCapability < kMinComputeCapability) {
    info.reason = "device 0 (" + info.deviceName + ") has compute capability " + std::to_string(prop.major) + "." +
                  std::to_string(prop.minor) + "; kvcompact's CUDA kernels need 8.0 or newer";
    return info;
  }
  info.available = true;
  return info;
}

std::unique_ptr<Backend> createCudaBackend(const BackendOptions& /*options*/, Status* status) {
  const CudaInfo info = queryCuda();
  if (!info.available) {
    if (status) *status = Status(StatusCode::kCudaUnavailable, "cuda unavailable: " + info.reason);
    return nullptr;
  }
  const cudaError_t e = cudaSetDevice(0);
  if (e != cudaSuccess) {
    if (status) *status = Status(StatusCode::kCudaUnavailable, "cuda unavailable: " + errorText("cudaSetDevice", e));
    return nullptr;
  }
  if (status) *status = Status::ok();
  return cuda::makeBackend("cuda");
}

}  // namespace kvc
