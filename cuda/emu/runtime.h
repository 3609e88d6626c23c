// Host-memory stand-ins for the CUDA runtime calls the backend uses. They live in
// namespace kvc_emu and the cuda* names are macros for them, so an emulated build can be
// linked into the same binary as the real runtime (cudart_static) without clashing.
#pragma once
#include <cstddef>

#include <driver_types.h>

namespace kvc_emu {

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);
const char* cudaGetErrorName(cudaError_t error);
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDriverGetVersion(int* version);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* totalBytes);

// Test-build accounting of host <-> device copies (by the cudaMemcpyKind the caller states),
// so tests can prove that an operation moved no rows through the host.
struct TransferStats {
  unsigned long long hostToDeviceBytes = 0, hostToDeviceCalls = 0;
  unsigned long long deviceToHostBytes = 0, deviceToHostCalls = 0;
};
TransferStats transferStats();
void resetTransferStats();

}  // namespace kvc_emu

// runtime.cpp defines the functions under their own names.
#if !defined(KVC_EMU_RUNTIME_IMPL)
#define cudaMalloc ::kvc_emu::cudaMalloc
#define cudaFree ::kvc_emu::cudaFree
#define cudaMallocHost ::kvc_emu::cudaMallocHost
#define cudaFreeHost ::kvc_emu::cudaFreeHost
#define cudaMemcpy ::kvc_emu::cudaMemcpy
#undef cudaMemcpyAsync
#define cudaMemcpyAsync ::kvc_emu::cudaMemcpyAsync
#define cudaMemset ::kvc_emu::cudaMemset
#undef cudaMemsetAsync
#define cudaMemsetAsync ::kvc_emu::cudaMemsetAsync
#define cudaStreamCreate ::kvc_emu::cudaStreamCreate
#define cudaStreamCreateWithFlags ::kvc_emu::cudaStreamCreateWithFlags
#define cudaStreamDestroy ::kvc_emu::cudaStreamDestroy
#undef cudaStreamSynchronize
#define cudaStreamSynchronize ::kvc_emu::cudaStreamSynchronize
#define cudaDeviceSynchronize ::kvc_emu::cudaDeviceSynchronize
#define cudaGetLastError ::kvc_emu::cudaGetLastError
#define cudaPeekAtLastError ::kvc_emu::cudaPeekAtLastError
#define cudaGetErrorString ::kvc_emu::cudaGetErrorString
#define cudaGetErrorName ::kvc_emu::cudaGetErrorName
#define cudaGetDeviceCount ::kvc_emu::cudaGetDeviceCount
#define cudaGetDevice ::kvc_emu::cudaGetDevice
#define cudaSetDevice ::kvc_emu::cudaSetDevice
#define cudaDriverGetVersion ::kvc_emu::cudaDriverGetVersion
#define cudaRuntimeGetVersion ::kvc_emu::cudaRuntimeGetVersion
#define cudaMemGetInfo ::kvc_emu::cudaMemGetInfo
#endif
