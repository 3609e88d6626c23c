// The write path of one input row, shared by append and rewriteRows so that a rewritten
// value row holds exactly the bytes append would have stored for the same input: stage the
// row in shared memory, rotate it when signs are given, quantize it. One warp per row.
#pragma once
#include <cstdint>

#include "../compat.cuh"
#include "hadamard.cuh"
#include "kvc/views.h"
#include "row_codec.cuh"

KVC_CUDA_NAMESPACE_BEGIN

__device__ __forceinline__ float loadInput(const void* base, InputType type, size_t index) {
  return type == InputType::kF32 ? static_cast<const float*>(base)[index]
                                 : loadHalf(static_cast<const uint16_t*>(base)[index]);
}

// Stages row `rowIndex` of `input` ([rows][D]) into x (rotating it when signs are given) and
// encodes it into dst. x and aux are warp-private shared scratch of D floats each.
__device__ __forceinline__ void writeRow(const void* input, InputType type, size_t rowIndex, const float* signs,
                                         Storage storage, uint32_t D, uint32_t groupSize, float* x, float* aux,
                                         uint8_t* dst, unsigned lane) {
  for (uint32_t d = lane; d < D; d += 32) x[d] = loadInput(input, type, rowIndex * D + d);
  if (signs) {
    rotateForward(x, signs, D, lane, 32, WarpSync());
  } else {
    __syncwarp();
  }
  encodeRowWarp(x, aux, dst, storage, D, groupSize, lane);
  __syncwarp();  // x and aux are reused for the next row
}

KVC_CUDA_NAMESPACE_END
