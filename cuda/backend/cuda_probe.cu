// kvc::measureCudaCopyBandwidth (cuda/cuda_probe.h) for the nvcc build: cudaMemcpy device to
// device between two cudaMalloc buffers, each copy timed with a pair of cudaEvents on the
// default stream, median of the repeats. Frees everything on every path.
#include <algorithm>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "../cuda_probe.h"
#include "kvc/backend.h"

namespace kvc {

namespace {

Status failure(const char* call, cudaError_t e) {
  cudaGetLastError();  // clear the sticky error so the caller's next CUDA call starts clean
  return Status(StatusCode::kCudaError, std::string("copy bandwidth probe: ") + call + " failed: " + cudaGetErrorString(e));
}

// Owns the probe's buffers and events, so that every early return releases them.
struct ProbeResources {
  void* src = nullptr;
  void* dst = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  ~ProbeResources() {
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    cudaFree(src);
    cudaFree(dst);
  }
};

}  // namespace

Status measureCudaCopyBandwidth(uint64_t bytes, uint32_t repeats, CopyBandwidth* out) {
  if (!out) return invalidArgument("copy bandwidth probe: out is null");
  if (bytes == 0 || repeats == 0) return invalidArgument("copy bandwidth probe: bytes and repeats must be positive");
  const CudaInfo info = queryCuda();
  if (!info.available) return Status(StatusCode::kCudaUnavailable, "cuda unavailable: " + info.reason);
  cudaError_t e = cudaSetDevice(0);
  if (e != cudaSuccess) return failure("cudaSetDevice", e);

  ProbeResources r;
  if ((e = cudaMalloc(&r.src, bytes)) != cudaSuccess) return failure("cudaMalloc", e);
  if ((e = cudaMalloc(&r.dst, bytes)) != cudaSuccess) return failure("cudaMalloc", e);
  // Touch the source so that the copies read committed memory.
  if ((e = cudaMemset(r.src, 0x5A, bytes)) != cudaSuccess) return failure("cudaMemset", e);
  if ((e = cudaEventCreate(&r.start)) != cudaSuccess) return failure("cudaEventCreate", e);
  if ((e = cudaEventCreate(&r.stop)) != cudaSuccess) return failure("cudaEventCreate", e);
  // One untimed copy: the first one pays for lazy context and page-table setup.
  if ((e = cudaMemcpy(r.dst, r.src, bytes, cudaMemcpyDeviceToDevice)) != cudaSuccess) return failure("cudaMemcpy", e);

  std::vector<double> ms(repeats);
  for (uint32_t i = 0; i < repeats; ++i) {
    if ((e = cudaEventRecord(r.start, 0)) != cudaSuccess) return failure("cudaEventRecord", e);
    if ((e = cudaMemcpyAsync(r.dst, r.src, bytes, cudaMemcpyDeviceToDevice, 0)) != cudaSuccess) return failure("cudaMemcpyAsync", e);
    if ((e = cudaEventRecord(r.stop, 0)) != cudaSuccess) return failure("cudaEventRecord", e);
    if ((e = cudaEventSynchronize(r.stop)) != cudaSuccess) return failure("cudaEventSynchronize", e);
    float elapsed = 0;
    if ((e = cudaEventElapsedTime(&elapsed, r.start, r.stop)) != cudaSuccess) return failure("cudaEventElapsedTime", e);
    ms[i] = elapsed;
  }
  std::sort(ms.begin(), ms.end());
  const double median = repeats % 2 ? ms[repeats / 2] : 0.5 * (ms[repeats / 2 - 1] + ms[repeats / 2]);
  out->bytes = bytes;
  out->repeats = repeats;
  out->milliseconds = median;
  const double seconds = median / 1e3;
  out->copyGBps = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0;
  out->memoryGBps = 2 * out->copyGBps;
  return Status::ok();
}

}  // namespace kvc
