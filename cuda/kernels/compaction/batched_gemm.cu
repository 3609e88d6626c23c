// Batched strided f32 GEMM for compaction: one launch multiplies the matrices of every
// problem of a batch (Q Kᵀ scores, E V outputs, Gram matrices, normal-equation right-hand
// sides). 64 × 64 output tiles through shared memory, 16 deep; each of 256 threads owns a
// 4 × 4 micro-tile, accumulating in f32 in k order.
#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr uint32_t kTile = kGemmTile, kDepth = 16, kThreads = 256;

// Loads one kTile × kDepth panel of A (as its transpose, sa[k][i]) or a kDepth × kTile panel
// of B (sb[k][j]). The thread-to-element map makes the unit-stride index the fastest one, so
// that neighbouring threads read neighbouring addresses whichever operand is transposed.
__device__ __forceinline__ void loadPanel(const float* base, uint32_t strideOuter, uint32_t strideK, uint32_t outer0,
                                          uint32_t outerCount, uint32_t k0, uint32_t K, float (*panel)[kTile + 4],
                                          unsigned tid) {
  const bool kFastest = strideK == 1;
  for (uint32_t e = tid; e < kTile * kDepth; e += kThreads) {
    const uint32_t o = kFastest ? e / kDepth : e % kTile;
    const uint32_t k = kFastest ? e % kDepth : e / kTile;
    float v = 0.0f;
    if (outer0 + o < outerCount && k0 + k < K)
      v = base[static_cast<size_t>(outer0 + o) * strideOuter + static_cast<size_t>(k0 + k) * strideK];
    panel[k][o] = v;
  }
}

__global__ KVC_LAUNCH_BOUNDS(256, 2) void batchedGemmKernel(const GemmProblem* problems) {
  __shared__ float sa[kDepth][kTile + 4];
  __shared__ float sb[kDepth][kTile + 4];
  const GemmProblem& p = problems[blockIdx.y];
  const uint32_t tilesN = (p.N + kTile - 1) / kTile, tilesM = (p.M + kTile - 1) / kTile;
  if (blockIdx.x >= tilesN * tilesM) return;  // whole block leaves together
  const uint32_t i0 = (blockIdx.x / tilesN) * kTile, j0 = (blockIdx.x % tilesN) * kTile;
  const unsigned tid = threadIdx.x;
  // Micro-tile rows ty + 16·r and columns tx + 16·c: the 16 threads of a half-warp read 16
  // consecutive floats of sb (no bank conflicts) and one broadcast of sa.
  const unsigned tx = tid % 16, ty = tid / 16;
  float acc[4][4];
  KVC_UNROLL
  for (int r = 0; r < 4; ++r)
    KVC_UNROLL
    for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;
  for (uint32_t k0 = 0; k0 < p.K; k0 += kDepth) {
    loadPanel(p.a, p.as0, p.as1, i0, p.M, k0, p.K, sa, tid);
    loadPanel(p.b, p.bs1, p.bs0, j0, p.N, k0, p.K, sb, tid);
    __syncthreads();
    const uint32_t kc = p.K - k0 < kDepth ? p.K - k0 : kDepth;
    for (uint32_t k = 0; k < kc; ++k) {
      float av[4], bv[4];
      KVC_UNROLL
      for (int r = 0; r < 4; ++r) av[r] = sa[k][ty + 16 * r];
      KVC_UNROLL
      for (int c = 0; c < 4; ++c) bv[c] = sb[k][tx + 16 * c];
      KVC_UNROLL
      for (int r = 0; r < 4; ++r)
        KVC_UNROLL
        for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
    }
    __syncthreads();
  }
  KVC_UNROLL
  for (int r = 0; r < 4; ++r) {
    const uint32_t i = i0 + ty + 16 * r;
    if (i >= p.M) continue;
    KVC_UNROLL
    for (int c = 0; c < 4; ++c) {
      const uint32_t j = j0 + tx + 16 * c;
      if (j >= p.N) continue;
      float* dst = p.c + static_cast<size_t>(i) * p.ldc + j;
      *dst = p.accumulate ? *dst + acc[r][c] : acc[r][c];
    }
  }
}

}  // namespace

cudaError_t launchBatchedGemm(const GemmProblem* problems, uint32_t count, uint32_t maxTiles, cudaStream_t stream) {
  if (count == 0 || maxTiles == 0) return cudaSuccess;
  KVC_LAUNCH(batchedGemmKernel, dim3(maxTiles, count), dim3(kThreads), 0, stream)(problems);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
