// Host-side packing of a launch's inputs into one buffer that is uploaded with a single
// copy (and of its outputs, copied back with one more), plus the grow-only device buffer
// that receives it. The core hands the backend host pointers only.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "../compat.cuh"

KVC_CUDA_NAMESPACE_BEGIN

class StagingBuffer {
 public:
  // Appends bytes (or reserves them uninitialized when src is nullptr); returns the offset.
  size_t add(const void* src, size_t bytes) {
    const size_t offset = (host_.size() + 15) / 16 * 16;  // 16-byte aligned for vector loads
    host_.resize(offset + bytes);
    if (src && bytes) std::memcpy(host_.data() + offset, src, bytes);
    return offset;
  }
  template <class T>
  size_t addArray(const T* src, size_t count) {
    return add(src, count * sizeof(T));
  }
  uint8_t* hostAt(size_t offset) { return host_.data() + offset; }
  size_t size() const { return host_.size(); }
  void clear() { host_.clear(); }

 private:
  std::vector<uint8_t> host_;
};

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  cudaError_t reserve(size_t bytes) {
    if (bytes <= capacity_) return cudaSuccess;
    cudaFree(ptr_);
    ptr_ = nullptr;
    capacity_ = 0;
    const size_t grown = bytes + bytes / 2;
    const cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&ptr_), grown);
    if (e == cudaSuccess) capacity_ = grown;
    return e;
  }
  uint8_t* get() const { return ptr_; }
  template <class T>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(ptr_ + offset);
  }

 private:
  uint8_t* ptr_ = nullptr;
  size_t capacity_ = 0;
};

KVC_CUDA_NAMESPACE_END
