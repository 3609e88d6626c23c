// Global -> shared copies that do not stall the issuing thread (cp.async, sm_80+), so a tile
// can be in flight while the previous one is computed. Before sm_80, in nvcc's host pass and
// under the emulator they are plain copies: the same results, without the overlap.
#pragma once
#include <cstdint>
#include <cstring>

#include "../compat.cuh"

KVC_CUDA_NAMESPACE_BEGIN

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define KVC_CP_ASYNC 1
#endif

// 16 bytes; both addresses 16-byte aligned. .cg: cached in L2 only (the rows are streamed).
__device__ __forceinline__ void copyAsync16(void* sharedDst, const void* globalSrc) {
#if defined(KVC_CP_ASYNC)
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(sharedDst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(globalSrc) : "memory");
#else
  std::memcpy(sharedDst, globalSrc, 16);
#endif
}

// 4 bytes; both addresses 4-byte aligned.
__device__ __forceinline__ void copyAsync4(void* sharedDst, const void* globalSrc) {
#if defined(KVC_CP_ASYNC)
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(sharedDst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(globalSrc) : "memory");
#else
  std::memcpy(sharedDst, globalSrc, 4);
#endif
}

// Closes the group of copies issued so far by this thread.
__device__ __forceinline__ void commitAsync() {
#if defined(KVC_CP_ASYNC)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most kPending of this thread's groups are still in flight. Other threads'
// copies become visible only after a __syncthreads that follows.
template <int kPending>
__device__ __forceinline__ void waitAsync() {
#if defined(KVC_CP_ASYNC)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

KVC_CUDA_NAMESPACE_END
