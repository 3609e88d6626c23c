// Normalized fast Walsh-Hadamard transform with sign flips on a row in shared memory:
// forward y = H diag(signs) x / sqrt(D) (append, queries), inverse x = diag(signs) H y / sqrt(D)
// (readRows, attention output). Butterflies run with h = 1, 2, 4, ... and the 1/sqrt(D)
// factor is one multiply at the end: the order the host reference uses, for exact parity.
#pragma once
#include <cstdint>

#include "../compat.cuh"

KVC_CUDA_NAMESPACE_BEGIN

// Butterflies over x[D] (D a power of two) by `threads` cooperating threads with index `tid`;
// Sync is __syncwarp for one warp per row, __syncthreads for a whole block.
template <class Sync>
__device__ __forceinline__ void hadamardButterflies(float* x, uint32_t D, unsigned tid, unsigned threads, Sync sync) {
  for (uint32_t h = 1; h < D; h *= 2) {
    sync();
    for (uint32_t p = tid; p < D / 2; p += threads) {
      const uint32_t i = (p / h) * 2 * h + p % h;
      const float a = x[i], b = x[i + h];
      x[i] = a + b;
      x[i + h] = a - b;
    }
  }
  sync();
}

template <class Sync>
__device__ __forceinline__ void rotateForward(float* x, const float* signs, uint32_t D, unsigned tid, unsigned threads,
                                              Sync sync) {
  for (uint32_t d = tid; d < D; d += threads) x[d] *= signs[d];
  hadamardButterflies(x, D, tid, threads, sync);
  const float norm = 1.0f / sqrtf(static_cast<float>(D));
  for (uint32_t d = tid; d < D; d += threads) x[d] *= norm;
  sync();
}

template <class Sync>
__device__ __forceinline__ void rotateInverse(float* x, const float* signs, uint32_t D, unsigned tid, unsigned threads,
                                              Sync sync) {
  hadamardButterflies(x, D, tid, threads, sync);
  const float norm = 1.0f / sqrtf(static_cast<float>(D));
  for (uint32_t d = tid; d < D; d += threads) x[d] = x[d] * norm * signs[d];
  sync();
}

struct WarpSync {
  __device__ __forceinline__ void operator()() const { __syncwarp(); }
};
struct BlockSync {
  __device__ __forceinline__ void operator()() const { __syncthreads(); }
};

KVC_CUDA_NAMESPACE_END
