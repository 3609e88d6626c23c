// The CPU backend's low-rank kernels (kvc/lowrank_ops.h): projection and lift picked per
// instruction set at run time, the eigensolver basis fit and the dense calibration attention.
#pragma once
#include <cstdint>

#include "kvc/lowrank_ops.h"

namespace kvc::cpu {

const LowRankKernels& lowRankKernels();
// The portable projection, the reference the vector paths are compared with (same sums in
// the same order of d).
void projectScalar(const float* in, uint64_t inStride, uint32_t n, uint32_t D, const float* basis, uint32_t r, float scale,
                   float* out, uint64_t outStride);
Status fitBasisSymmetric(const float* rows, uint32_t n, uint32_t D, uint32_t r, float* basis, double* eigenvalues);
void denseAttention(const DenseAttentionArgs& a);

}  // namespace kvc::cpu
