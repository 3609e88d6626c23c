// The per-instruction-set part of the low-rank kernels (projection, lift), filled by
// lowrank_<isa>.cpp and picked at run time by lowrank_kernels.cpp.
#pragma once
#include <cstdint>

#include "kvc/lowrank_ops.h"

namespace kvc::cpu {

struct LowRankIsa {
  const char* name = nullptr;
  void (*project)(const float* in, uint64_t inStride, uint32_t n, uint32_t D, const float* basis, uint32_t r, float scale,
                  float* out, uint64_t outStride) = nullptr;
  void (*lift)(const float* coef, uint64_t coefStride, uint32_t n, uint32_t r, const float* basis, uint32_t D, float* out,
               uint64_t outStride) = nullptr;
  void (*ropeLogits)(const RopeLogitsArgs& a) = nullptr;
  void (*rowDots)(const float* rows, uint64_t rowStride, uint32_t n, uint32_t L, const float* queries, uint32_t M, float scale,
                  float* out, uint64_t outStride) = nullptr;
  void (*weightedSum)(const float* w, uint64_t wStride, uint32_t M, uint32_t n, const float* values, uint32_t RV, float* out) = nullptr;
  double (*expShift)(float* x, uint32_t n, float shift) = nullptr;
};

// false when this build or this CPU lacks the instructions.
bool lowRankAvx512(LowRankIsa* out);
bool lowRankAvx2(LowRankIsa* out);

}  // namespace kvc::cpu
