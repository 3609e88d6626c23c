// Softmax statistics of materialized score matrices (one row per query): row max, row sum,
// exps in place; the normalization of the attention outputs; and the per-row (column)
// statistics that rank rows for compaction and eviction. Same formulas as the CPU kernels
// (cpp/cpu/compaction/kernels.inl softmaxRows / accumulateColumnSquares).
#include <cmath>

#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarps = 4;

__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}
__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// Grid (ceil(maxRows / 4), jobs), one warp per row.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void softmaxRowsKernel(const SoftmaxJob* jobs) {
  const SoftmaxJob& j = jobs[blockIdx.y];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t r = blockIdx.x * kWarps + warp;
  if (r >= j.rows) return;
  float* x = j.s + static_cast<size_t>(r) * j.ld;
  float m = -INFINITY;
  for (uint32_t c = lane; c < j.cols; c += 32) {
    const float v = j.bias ? x[c] + j.bias[c] : x[c];
    x[c] = v;
    m = fmaxf(m, v);
  }
  m = warpMax(m);
  if (!(m > -INFINITY) || !(m < INFINITY)) {
    // All −inf (an empty softmax) or an infinite logit: no usable distribution.
    for (uint32_t c = lane; c < j.cols; c += 32) x[c] = 0.0f;
    if (lane == 0) {
      j.m[r] = m;
      j.z[r] = 0.0f;
    }
    return;
  }
  float sum = 0.0f;
  for (uint32_t c = lane; c < j.cols; c += 32) {
    const float e = expf(x[c] - m);
    x[c] = e;
    sum += e;
  }
  sum = warpSum(sum);
  if (lane == 0) {
    j.m[r] = m;
    j.z[r] = sum;
  }
}

// Grid (ceil(maxRows / 4), jobs), one warp per row of y [rows, D].
__global__ KVC_LAUNCH_BOUNDS(128, 4) void normalizeRowsKernel(const SoftmaxJob* jobs, uint32_t D) {
  const SoftmaxJob& j = jobs[blockIdx.y];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t r = blockIdx.x * kWarps + warp;
  if (r >= j.rows) return;
  const float z = j.z[r], inv = z > 0.0f ? 1.0f / z : 0.0f;
  float* y = j.y + static_cast<size_t>(r) * D;
  for (uint32_t d = lane; d < D; d += 32) y[d] *= inv;
}

// Grid (ceil(maxCols / 128), jobs): one thread per column walks down the rows, so a warp reads
// 32 consecutive floats of each row (coalesced).
__global__ KVC_LAUNCH_BOUNDS(128, 4) void columnStatsKernel(const ColumnJob* jobs) {
  const ColumnJob& j = jobs[blockIdx.y];
  const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= j.cols) return;
  double acc = 0.0;
  for (uint32_t r = 0; r < j.rows; ++r) {
    const float e = j.s[static_cast<size_t>(r) * j.ld + c];
    const float z = j.z[r];
    const float w = j.mode == 1 ? 1.0f : (z > 0.0f ? 1.0f / z : 0.0f);
    const float a = e * w;
    acc += j.mode == 2 ? static_cast<double>(a) : static_cast<double>(a * a);
  }
  j.colAcc[c] = acc;
}

}  // namespace

cudaError_t launchSoftmaxRows(const SoftmaxJob* jobs, uint32_t count, uint32_t maxRows, cudaStream_t stream) {
  if (count == 0 || maxRows == 0) return cudaSuccess;
  KVC_LAUNCH(softmaxRowsKernel, dim3((maxRows + kWarps - 1) / kWarps, count), dim3(32 * kWarps), 0, stream)(jobs);
  return cudaGetLastError();
}

cudaError_t launchNormalizeRows(const SoftmaxJob* jobs, uint32_t count, uint32_t maxRows, uint32_t D,
                                cudaStream_t stream) {
  if (count == 0 || maxRows == 0) return cudaSuccess;
  KVC_LAUNCH(normalizeRowsKernel, dim3((maxRows + kWarps - 1) / kWarps, count), dim3(32 * kWarps), 0, stream)(jobs, D);
  return cudaGetLastError();
}

cudaError_t launchColumnStats(const ColumnJob* jobs, uint32_t count, uint32_t maxCols, cudaStream_t stream) {
  if (count == 0 || maxCols == 0) return cudaSuccess;
  KVC_LAUNCH(columnStatsKernel, dim3((maxCols + 127) / 128, count), dim3(128), 0, stream)(jobs);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
