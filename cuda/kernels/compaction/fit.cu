// Assembly of one chunk's normal equations, batched over chunks: the kept rows gathered from
// the decoded scratch, the mass matrix and NNLS target of the beta fit, the softmax over the
// kept rows and the right-hand side of the value fit, the ridge pull toward the original
// values, and the store of the solution. The GEMMs in between (Gram matrices, X_F·rhs) run in
// batched_gemm.cu. Formulas and float rounding order: cpp/core/compaction/chunk_compactor.cpp.
#include <cmath>

#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarps = 4;

// Grid (ceil(maxT / 4), jobs), one warp per kept row.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void gatherKeptKernel(const FitJob* jobs) {
  const FitJob& j = jobs[blockIdx.y];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t c = blockIdx.x * kWarps + warp;
  if (c >= j.t) return;
  const size_t row = static_cast<size_t>(j.keep[c]);
  for (uint32_t d = lane; d < j.D; d += 32) j.keptKeys[static_cast<size_t>(c) * j.D + d] = j.keys[row * j.D + d];
  for (uint32_t d = lane; d < j.VD; d += 32) j.fitted[static_cast<size_t>(c) * j.VD + d] = j.values[row * j.VD + d];
  if (lane == 0) j.keptBias[c] = j.beta[c] = j.bias[row];
}

// Grid (ceil(maxN / 128), jobs), one thread per query (column of the [t, n] matrices).
__global__ KVC_LAUNCH_BOUNDS(128, 4) void massMatrixKernel(const FitJob* jobs) {
  const FitJob& j = jobs[blockIdx.y];
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= j.n) return;
  const float z = j.z[i];
  const float negMax = -j.m[i] - (j.relative && z > 0.0f ? logf(z) : 0.0f);
  float target = j.relative ? (z > 0.0f ? 1.0f : 0.0f) : z;
  for (uint32_t c = 0; c < j.t; ++c) {
    const size_t at = static_cast<size_t>(c) * j.n + i;
    j.mt[at] = expf((j.lt[at] + j.keptBias[c]) + negMax);
  }
  // The protected rows keep w = 1: their mass is taken off the target.
  for (uint32_t p = 0; p < j.np; ++p) target -= j.mt[static_cast<size_t>(j.protPos[p]) * j.n + i];
  j.target[i] = target;
  for (uint32_t c = 0; c < j.f; ++c) j.free[static_cast<size_t>(c) * j.n + i] = j.mt[static_cast<size_t>(j.freePos[c]) * j.n + i];
}

// Grid (ceil(maxN / 128), jobs), one thread per query.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void valueSystemKernel(const FitJob* jobs, uint32_t D) {
  const FitJob& j = jobs[blockIdx.y];
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= j.n) return;
  float colMax = -INFINITY;
  for (uint32_t c = 0; c < j.t; ++c) colMax = fmaxf(colMax, j.lt[static_cast<size_t>(c) * j.n + i] + j.beta[c]);
  const float negMax = -colMax;
  float sum = 0.0f;
  for (uint32_t c = 0; c < j.t; ++c) {
    const size_t at = static_cast<size_t>(c) * j.n + i;
    const float x = expf((j.lt[at] + j.beta[c]) + negMax);
    j.mt[at] = x;
    sum += x;
  }
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (uint32_t c = 0; c < j.t; ++c) j.mt[static_cast<size_t>(c) * j.n + i] *= inv;
  // Right-hand side: Y minus what the protected rows (values fixed) already contribute.
  for (uint32_t d = 0; d < D; ++d) {
    float contrib = 0.0f;
    for (uint32_t p = 0; p < j.np; ++p) {
      const uint32_t c = static_cast<uint32_t>(j.protPos[p]);
      contrib = fmaf(j.mt[static_cast<size_t>(c) * j.n + i], j.fitted[static_cast<size_t>(c) * D + d], contrib);
    }
    j.rhs[static_cast<size_t>(i) * D + d] = j.y[static_cast<size_t>(i) * D + d] - contrib;
  }
  for (uint32_t c = 0; c < j.f; ++c) j.free[static_cast<size_t>(c) * j.n + i] = j.mt[static_cast<size_t>(j.freePos[c]) * j.n + i];
}

// Grid (ceil(maxF · D / 128), jobs), one thread per element.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void valueRhsKernel(const FitJob* jobs, uint32_t D) {
  const FitJob& j = jobs[blockIdx.y];
  const size_t e = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= static_cast<size_t>(j.f) * D) return;
  const double lambda = *j.lambda;
  if (!(lambda >= 0.0)) return;  // reported as a failed fit
  const size_t cc = e / D, d = e % D;
  // The ridge pulls the fitted values toward the rows' original values, not toward 0.
  j.c[e] = static_cast<double>(j.r[e]) + lambda * j.fitted[static_cast<size_t>(j.freePos[cc]) * D + d];
}

__global__ KVC_LAUNCH_BOUNDS(128, 4) void valueStoreKernel(const FitJob* jobs, uint32_t D) {
  const FitJob& j = jobs[blockIdx.y];
  const size_t e = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= static_cast<size_t>(j.f) * D || !(*j.lambda >= 0.0)) return;
  const size_t cc = e / D, d = e % D;
  j.fitted[static_cast<size_t>(j.freePos[cc]) * D + d] = static_cast<float>(j.c[e]);
}

}  // namespace

cudaError_t launchGatherKept(const FitJob* jobs, uint32_t count, uint32_t maxT, cudaStream_t stream) {
  if (count == 0 || maxT == 0) return cudaSuccess;
  KVC_LAUNCH(gatherKeptKernel, dim3((maxT + kWarps - 1) / kWarps, count), dim3(32 * kWarps), 0, stream)(jobs);
  return cudaGetLastError();
}

cudaError_t launchMassMatrix(const FitJob* jobs, uint32_t count, uint32_t maxN, cudaStream_t stream) {
  if (count == 0 || maxN == 0) return cudaSuccess;
  KVC_LAUNCH(massMatrixKernel, dim3((maxN + 127) / 128, count), dim3(128), 0, stream)(jobs);
  return cudaGetLastError();
}

cudaError_t launchValueSystem(const FitJob* jobs, uint32_t count, uint32_t maxN, uint32_t D, cudaStream_t stream) {
  if (count == 0 || maxN == 0) return cudaSuccess;
  KVC_LAUNCH(valueSystemKernel, dim3((maxN + 127) / 128, count), dim3(128), 0, stream)(jobs, D);
  return cudaGetLastError();
}

cudaError_t launchValueRhs(const FitJob* jobs, uint32_t count, uint32_t maxF, uint32_t D, cudaStream_t stream) {
  const size_t elements = static_cast<size_t>(maxF) * D;
  if (count == 0 || elements == 0) return cudaSuccess;
  KVC_LAUNCH(valueRhsKernel, dim3(static_cast<unsigned>((elements + 127) / 128), count), dim3(128), 0, stream)(jobs, D);
  return cudaGetLastError();
}

cudaError_t launchValueStore(const FitJob* jobs, uint32_t count, uint32_t maxF, uint32_t D, cudaStream_t stream) {
  const size_t elements = static_cast<size_t>(maxF) * D;
  if (count == 0 || elements == 0) return cudaSuccess;
  KVC_LAUNCH(valueStoreKernel, dim3(static_cast<unsigned>((elements + 127) / 128), count), dim3(128), 0, stream)(jobs, D);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
