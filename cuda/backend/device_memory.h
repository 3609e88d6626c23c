// Device memory of the compaction and eviction operations: offsets planned on the host
// (Arena) into one owned allocation (DeviceMemory), and the CUDA-error-to-Status helper.
#pragma once
#include <cstdint>
#include <string>

#include "../compat.cuh"
#include "kvc/status.h"

KVC_CUDA_NAMESPACE_BEGIN

inline Status cudaStatus(const std::string& what, cudaError_t e) {
  cudaGetLastError();
  return Status(StatusCode::kCudaError, what + ": " + cudaGetErrorString(e));
}
#define KVC_CC_TRY(what, expr)                              \
  do {                                                      \
    const cudaError_t kvc_e_ = (expr);                      \
    if (kvc_e_ != cudaSuccess) return cudaStatus((what), kvc_e_); \
  } while (0)

// Offsets into one device allocation, 256-byte aligned (coalesced, and f64-safe) or, for the
// downloaded reports, 8-byte aligned so that the one download stays as small as its content.
class Arena {
 public:
  explicit Arena(size_t align = 256) : align_(align) {}
  size_t take(size_t bytes) {
    const size_t o = (size_ + align_ - 1) / align_ * align_;
    size_ = o + bytes;
    return o;
  }
  template <class T>
  size_t array(size_t count) {
    return take(count * sizeof(T));
  }
  size_t size() const { return (size_ + 255) / 256 * 256; }
  size_t used() const { return size_; }

 private:
  size_t align_;
  size_t size_ = 0;
};

// An owned device allocation (freed with the object).
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() { cudaFree(ptr_); }
  cudaError_t allocate(size_t bytes) {
    bytes_ = bytes;
    return cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes ? bytes : 1);
  }
  template <class T>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(ptr_ + offset);
  }
  uint8_t* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  uint8_t* ptr_ = nullptr;
  size_t bytes_ = 0;
};

KVC_CUDA_NAMESPACE_END
