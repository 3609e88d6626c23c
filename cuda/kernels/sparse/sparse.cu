// Sparse-decode kernels: key summaries of blocks (per-channel min / max of the stored keys,
// bf16 rounded outward) and the per-block upper bounds of the logits that pick the blocks
// attention reads (kvc/key_summary.h holds the formulas; cpp/cpu/sparse is the CPU twin).
#include "../hadamard.cuh"
#include "../rope.cuh"
#include "../row_codec.cuh"
#include "kvc/key_summary.h"
#include "sparse_args.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kThreads = 128;
constexpr float kInf = __builtin_huge_valf();

// Grid: one block per job; threads stride over the channels, each folding every row of the job
// (with rope, each row's channel after RoPE at the row's position: it reads its partner too).
__global__ KVC_LAUNCH_BOUNDS(128, 4) void summarizeKernel(SummarizeArgs a) {
  const SummaryJob job = a.jobs[blockIdx.x];
  const BlockLayout& L = a.pool.layout;
  const uint32_t D = a.codec.headDim;
  const uint8_t* block = a.pool.base + static_cast<uint64_t>(job.block) * L.blockBytes;
  uint8_t* entry = summaryEntry(a.pool, job.block);
  uint16_t* summary = summaryBounds(entry);
  if (threadIdx.x == 0) {
    const float* beta = reinterpret_cast<const float*>(block + L.betaOffset);
    float maxBeta = job.begin == 0 ? -kInf : *summaryMaxBeta(entry);
    for (uint32_t r = job.begin; r < job.end; ++r) maxBeta = fmaxf(maxBeta, beta[r]);
    *summaryMaxBeta(entry) = maxBeta;
  }
  for (uint32_t d = threadIdx.x; d < D; d += kThreads) {
    float lo = job.begin == 0 ? kInf : bf16ToFloat(summary[d]);
    float hi = job.begin == 0 ? -kInf : bf16ToFloat(summary[D + d]);
    const int32_t* positions = reinterpret_cast<const int32_t*>(block + L.positionsOffset);
    const uint32_t dims = a.rope.spec.dims, partner = d < dims ? ropePartnerOf(d, dims, a.rope.spec.style) : d;
    for (uint32_t r = job.begin; r < job.end; ++r) {
      const uint8_t* row = block + static_cast<uint64_t>(r) * L.keyRowBytes;
      float k = decodeElement(row, a.codec.keyStorage, D, a.codec.groupSize, d);
      if (d < dims) {
        // RoPE at the row's stored position, rounded as the CPU twin rounds it (no contraction).
        float c, sn;
        ropeAngle(a.rope.cosTable, a.rope.sinTable, dims, static_cast<uint32_t>(positions[r]), d, c, sn);
        const float x1 = decodeElement(row, a.codec.keyStorage, D, a.codec.groupSize, partner);
        k = __fadd_rn(__fmul_rn(k, c), __fmul_rn(x1, sn));
      }
      lo = fminf(lo, k);
      hi = fmaxf(hi, k);
    }
    summary[d] = bf16Down(lo);
    summary[D + d] = bf16Up(hi);
  }
}

// Grid: one block per query row; dynamic shared memory headDim floats.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void rotateQueriesKernel(RotateQueriesArgs a) {
  KVC_DYNAMIC_SHARED(float, x);
  float* q = a.queries + static_cast<size_t>(blockIdx.x) * a.headDim;
  for (uint32_t d = threadIdx.x; d < a.headDim; d += kThreads) x[d] = q[d];
  rotateForward(x, a.signs, a.headDim, threadIdx.x, kThreads, BlockSync());
  for (uint32_t d = threadIdx.x; d < a.headDim; d += kThreads) q[d] = x[d];
}

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Grid: one block per BoundsWork; warp w bounds blocks blockBegin + w, + 4, ...: lanes stride
// over the channels of the block's summary entry for each query.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void boundsKernel(BoundsArgs a) {
  const BoundsWork w = a.work[blockIdx.x];
  const BoundsStreamArgs s = a.streams[w.stream];
  const uint32_t D = a.headDim;
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (uint32_t b = w.blockBegin + warp; b < w.blockEnd; b += kThreads / 32) {
    const uint8_t* entry = summaryEntry(a.pool, s.blockTable[b]);
    const uint16_t* lo = summaryBounds(entry);
    const uint16_t* hi = lo + D;
    float best = -kInf;
    for (uint32_t m = 0; m < a.queries; ++m) {
      const float* q = s.queries + static_cast<size_t>(m) * D;
      float acc = 0.0f;
      for (uint32_t d = lane; d < D; d += 32) acc += boundTerm(q[d], bf16ToFloat(lo[d]), bf16ToFloat(hi[d]));
      best = fmaxf(best, warpSum(acc));
    }
    if (lane == 0) {
      const float bound = a.scale * best + *summaryMaxBeta(entry);
      s.bounds[b] = bound != bound ? kInf : bound;  // NaN: always read
    }
  }
}

}  // namespace

cudaError_t launchSummarizeBlocks(const SummarizeArgs& args, cudaStream_t stream) {
  if (args.count == 0) return cudaSuccess;
  KVC_LAUNCH(summarizeKernel, dim3(args.count), dim3(kThreads), 0, stream)(args);
  return cudaGetLastError();
}

cudaError_t launchRotateQueries(const RotateQueriesArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return cudaSuccess;
  KVC_LAUNCH(rotateQueriesKernel, dim3(args.rows), dim3(kThreads), args.headDim * sizeof(float), stream)(args);
  return cudaGetLastError();
}

cudaError_t launchBlockBounds(const BoundsArgs& args, cudaStream_t stream) {
  if (args.workCount == 0) return cudaSuccess;
  KVC_LAUNCH(boundsKernel, dim3(args.workCount), dim3(kThreads), 0, stream)(args);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
