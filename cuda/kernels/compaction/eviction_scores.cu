// Per-row eviction scores that read keys (cpp/core/eviction/scores.cpp): the negative key
// norm, and the mean attention of recorded queries max-pooled along the rows. The attention
// itself comes from the batched GEMM + softmax + column statistics of the compaction kernels.
#include <cmath>

#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarps = 4;

__device__ __forceinline__ double warpSumD(double v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// Grid (ceil(maxRows / 4), jobs), one warp per row.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void rowScoresKernel(const RowScoreJob* jobs, uint32_t D) {
  const RowScoreJob& j = jobs[blockIdx.y];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t r = blockIdx.x * kWarps + warp;
  if (r >= j.rows) return;
  if (j.kind == 1) {
    const float* k = j.keys + static_cast<size_t>(r) * D;
    double sq = 0.0;
    for (uint32_t d = lane; d < D; d += 32) sq += static_cast<double>(k[d]) * k[d];
    sq = warpSumD(sq);
    if (lane == 0) j.scores[r] = static_cast<float>(-sqrt(sq));
    return;
  }
  if (lane != 0) return;
  // SnapKV's observation window and the rows before it are pooled apart (RowScoreInput::poolSplit).
  const uint32_t half = j.pool / 2, split = j.poolSplit < j.rows ? j.poolSplit : j.rows;
  const uint32_t begin = r < split ? 0 : split, end = r < split ? split : j.rows;
  const uint32_t lo = r - (half < r - begin ? half : r - begin), hi = r + half < end - 1 ? r + half : end - 1;
  double m = j.colAcc[lo] / j.queries;
  for (uint32_t i = lo + 1; i <= hi; ++i) m = fmax(m, j.colAcc[i] / j.queries);
  j.scores[r] = static_cast<float>(m);
}

}  // namespace

cudaError_t launchRowScores(const RowScoreJob* jobs, uint32_t count, uint32_t maxRows, uint32_t D, cudaStream_t stream) {
  if (count == 0 || maxRows == 0) return cudaSuccess;
  KVC_LAUNCH(rowScoresKernel, dim3((maxRows + kWarps - 1) / kWarps, count), dim3(32 * kWarps), 0, stream)(jobs, D);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
