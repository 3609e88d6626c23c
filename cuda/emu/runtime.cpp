// Host-memory implementation of the emulated CUDA runtime: "device" memory is host
// memory, every stream is synchronous, and the last error is kept per host thread as the
// real runtime does. Fresh allocations are 0xFF-filled (or lazily mapped when large), so
// that kernels reading memory nobody wrote see NaN instead of a plausible zero.
#define KVC_EMU_RUNTIME_IMPL
#include "runtime.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "launch.h"

namespace kvc_emu {

namespace {

thread_local cudaError_t lastError = cudaSuccess;

// Large reservations (the block pool) are mapped lazily, so reserving a big pool costs
// address space only, as it would cost nothing but device memory on a GPU.
constexpr size_t kMmapThreshold = 1u << 20;

struct Allocations {
  std::mutex mutex;
  std::unordered_map<void*, size_t> mapped;  // mmap'd pointer -> bytes
};

Allocations& allocations() {
  static Allocations a;
  return a;
}

// Fake stream handles: distinct non-null values, never dereferenced.
CUstream_st* const kFakeStream = reinterpret_cast<CUstream_st*>(static_cast<uintptr_t>(0x5157));

}  // namespace

void setLastError(cudaError_t error) {
  if (error != cudaSuccess) lastError = error;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return cudaErrorInvalidValue;
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (bytes >= kMmapThreshold) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return lastError = cudaErrorMemoryAllocation;
    std::lock_guard<std::mutex> lock(allocations().mutex);
    allocations().mapped[p] = bytes;
    *ptr = p;
    return cudaSuccess;
  }
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);  // cudaMalloc aligns to 256
  if (!p) return lastError = cudaErrorMemoryAllocation;
  std::memset(p, 0xFF, bytes);
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(allocations().mutex);
    auto it = allocations().mapped.find(ptr);
    if (it != allocations().mapped.end()) {
      munmap(ptr, it->second);
      allocations().mapped.erase(it);
      return cudaSuccess;
    }
  }
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return cudaMalloc(ptr, bytes); }
cudaError_t cudaFreeHost(void* ptr) { return cudaFree(ptr); }

namespace {
std::atomic<unsigned long long> h2dBytes{0}, h2dCalls{0}, d2hBytes{0}, d2hCalls{0};
}  // namespace

TransferStats transferStats() {
  TransferStats s;
  s.hostToDeviceBytes = h2dBytes.load();
  s.hostToDeviceCalls = h2dCalls.load();
  s.deviceToHostBytes = d2hBytes.load();
  s.deviceToHostCalls = d2hCalls.load();
  return s;
}

void resetTransferStats() { h2dBytes = h2dCalls = d2hBytes = d2hCalls = 0; }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes && (!dst || !src)) return lastError = cudaErrorInvalidValue;
  if (kind == cudaMemcpyHostToDevice) {
    h2dBytes += bytes;
    ++h2dCalls;
  } else if (kind == cudaMemcpyDeviceToHost) {
    d2hBytes += bytes;
    ++d2hCalls;
  }
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (bytes && !ptr) return lastError = cudaErrorInvalidValue;
  if (bytes) std::memset(ptr, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) { return cudaMemset(ptr, value, bytes); }

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  if (!stream) return cudaErrorInvalidValue;
  *stream = kFakeStream;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) { return cudaStreamCreate(stream); }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaGetLastError() {
  const cudaError_t e = lastError;
  lastError = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return lastError; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "unknown error";
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return cudaErrorInvalidValue;
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return cudaErrorInvalidValue;
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : (lastError = cudaErrorInvalidDevice); }
cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return cudaErrorInvalidValue;
  *version = 0;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return cudaErrorInvalidValue;
  *version = 0;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* totalBytes) {
  if (freeBytes) *freeBytes = size_t(1) << 40;
  if (totalBytes) *totalBytes = size_t(1) << 40;
  return cudaSuccess;
}

}  // namespace kvc_emu
