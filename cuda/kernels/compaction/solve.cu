// The f64 solves of compaction, batched over problems: Cholesky of G + λI with the ridge
// raised ×100 (up to five times) when a pivot fails (one block per problem, blocked
// right-looking with 32 × 32 f64 tiles in shared memory), the
// triangular solves (one thread per right-hand side column), and the projected coordinate
// descent of the NNLS mass fit (one warp per problem: the coordinates move one after another,
// each move updates the gradient across the lanes). Formulas: cpp/core/compaction/
// chunk_compactor.cpp factorWithRidge / solveNnls and cpp/cpu/compaction/kernels.inl.
#include <cmath>

#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

#if !defined(__CUDACC__)
using std::isfinite;  // the device build has it as a global function
#endif

namespace {

constexpr unsigned kCholThreads = 512, kCholWarps = kCholThreads / 32;
// Panels are kTile columns wide; the trailing update works on kRowTile × kRowTile tiles.
constexpr uint32_t kTile = 32, kTileStride = kTile + 1;  // +1: rows of a tile fall in different banks
constexpr uint32_t kRowTile = 64, kRowsPerThread = kRowTile / kCholWarps, kColsPerLane = kRowTile / 32;

// A(i, j) of the regularized matrix, read from the f32 Gram matrix.
__device__ __forceinline__ double regAt(const float* g, uint32_t size, uint32_t i, uint32_t j, double lambda) {
  const double v = static_cast<double>(g[static_cast<size_t>(i) * size + j]);
  return i == j ? v + lambda : v;
}

// Blocked right-looking Cholesky of one problem per block, on the lower triangle of l (which
// starts as G + λI). For every panel of kTile columns k0..k0+kb:
//   1. one warp factors the diagonal tile in shared memory (lane r owns row r);
//   2. row tile by row tile below it, the block solves the panel rows (L_Ik = A_Ik L_kk^-T) in
//      shared memory, then
//   3. subtracts L_I L_Jᵀ from every trailing tile (I, J ≤ I), both panel tiles in shared
//      memory, one element per thread and row step, columns across the lanes (coalesced).
// Each trailing element is read and written once per panel, so the factor moves ~n³/12 bytes
// of f64 instead of the left-looking ~n³·8/6 (every column re-reading the row prefixes of L).
// Every element still subtracts its products in ascending k, as the textbook loop does (the
// panel multiplies by the reciprocal pivot); a failed pivot anywhere restarts the factor with
// the ridge raised ×100 (factorWithRidge).
__global__ KVC_LAUNCH_BOUNDS(512, 1) void choleskyRidgeKernel(const CholeskyJob* jobs, float ridge) {
  __shared__ double diag[kTile * kTileStride];
  __shared__ double panelI[kRowTile * kTileStride];
  __shared__ double panelJ[kRowTile * kTileStride];
  __shared__ double invDiag[kTile];
  __shared__ int failed;
  const CholeskyJob& job = jobs[blockIdx.x];
  const uint32_t n = job.size;
  const unsigned tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  if (n == 0) return;
  double trace = 0.0;
  for (uint32_t i = 0; i < n; ++i) trace += static_cast<double>(job.gram[static_cast<size_t>(i) * n + i]);
  const double scale = trace > 0.0 && isfinite(trace) ? trace / n : 1.0;
  double lambda = fmax(static_cast<double>(ridge), 1e-12) * scale;
  double* l = job.l;
  bool ok = false;
  uint32_t raises = 0;
  for (int attempt = 0; attempt < 6 && !ok; ++attempt) {
    if (tid == 0) failed = 0;
    for (uint32_t i = warp; i < n; i += kCholWarps)
      for (uint32_t j = lane; j <= i; j += 32) l[static_cast<size_t>(i) * n + j] = regAt(job.gram, n, i, j, lambda);
    __syncthreads();
    for (uint32_t k0 = 0; k0 < n; k0 += kTile) {
      const uint32_t kb = n - k0 < kTile ? n - k0 : kTile;
      for (uint32_t idx = tid; idx < kb * kb; idx += kCholThreads) {
        const uint32_t r = idx / kb, c = idx % kb;
        if (c <= r) diag[r * kTileStride + c] = l[static_cast<size_t>(k0 + r) * n + k0 + c];
      }
      __syncthreads();
      // 1. The diagonal tile, right-looking inside the tile.
      if (warp == 0) {
        for (uint32_t c = 0; c < kb; ++c) {
          const double pivot = diag[c * kTileStride + c];
          if (!(pivot > 0.0) || !isfinite(pivot)) {  // every lane read the same pivot
            if (lane == 0) failed = 1;
            break;
          }
          const double root = sqrt(pivot);
          __syncwarp();
          if (lane == c) diag[c * kTileStride + c] = root;
          if (lane > c && lane < kb) diag[lane * kTileStride + c] = diag[lane * kTileStride + c] / root;
          __syncwarp();
          if (lane > c && lane < kb) {
            const double lrc = diag[lane * kTileStride + c];
            for (uint32_t cc = c + 1; cc <= lane; ++cc) diag[lane * kTileStride + cc] -= lrc * diag[cc * kTileStride + c];
          }
          __syncwarp();
        }
      }
      __syncthreads();
      if (failed) break;  // uniform: every thread read the same flag after the barrier
      for (uint32_t idx = tid; idx < kb * kb; idx += kCholThreads) {
        const uint32_t r = idx / kb, c = idx % kb;
        if (c <= r) l[static_cast<size_t>(k0 + r) * n + k0 + c] = diag[r * kTileStride + c];
      }
      // Reciprocal pivots: the panel solve multiplies, as the CPU's factor does.
      if (tid < kb) invDiag[tid] = 1.0 / diag[tid * kTileStride + tid];
      __syncthreads();
      // 2 + 3. Row tile by row tile below the diagonal tile: solve the tile's panel rows
      // L_I = A_I L_kk^-T in shared memory (8 threads per row, columns in order), store them, then
      // subtract L_I L_Jᵀ from every trailing tile (I, J <= I); the L_J were stored before.
      for (uint32_t i0 = k0 + kb; i0 < n; i0 += kRowTile) {
        const uint32_t ib = n - i0 < kRowTile ? n - i0 : kRowTile;
        for (uint32_t idx = tid; idx < ib * kb; idx += kCholThreads) {
          const uint32_t r = idx / kb, c = idx % kb;
          panelI[r * kTileStride + c] = l[static_cast<size_t>(i0 + r) * n + k0 + c];
        }
        __syncthreads();
        {
          const uint32_t r = tid / 8, part = tid % 8;  // a row's 8 threads share a warp
          for (uint32_t c = 0; c < kb; ++c) {
            if (part == 0 && r < ib) panelI[r * kTileStride + c] *= invDiag[c];
            __syncwarp();
            if (r < ib) {
              const double x = panelI[r * kTileStride + c];
              for (uint32_t cc = c + 1 + part; cc < kb; cc += 8) panelI[r * kTileStride + cc] -= x * diag[cc * kTileStride + c];
            }
            __syncwarp();
          }
        }
        __syncthreads();
        for (uint32_t idx = tid; idx < ib * kb; idx += kCholThreads) {
          const uint32_t r = idx / kb, c = idx % kb;
          l[static_cast<size_t>(i0 + r) * n + k0 + c] = panelI[r * kTileStride + c];
        }
        for (uint32_t j0 = k0 + kb; j0 <= i0; j0 += kRowTile) {
          const uint32_t jb = n - j0 < kRowTile ? n - j0 : kRowTile;
          const double* pj = panelI;
          if (j0 != i0) {
            for (uint32_t idx = tid; idx < jb * kb; idx += kCholThreads) {
              const uint32_t r = idx / kb, c = idx % kb;
              panelJ[r * kTileStride + c] = l[static_cast<size_t>(j0 + r) * n + k0 + c];
            }
            pj = panelJ;
          }
          __syncthreads();
          // Thread (warp, lane): rows warp + 16q, columns lane + 32e. All its elements are loaded
          // before any is updated, so 8 loads per thread are in flight at once.
          double v[kRowsPerThread][kColsPerLane];
          bool live[kRowsPerThread][kColsPerLane];
          KVC_UNROLL
          for (uint32_t q = 0; q < kRowsPerThread; ++q) {
            KVC_UNROLL
            for (uint32_t e = 0; e < kColsPerLane; ++e) {
              const uint32_t r = warp + kCholWarps * q, col = lane + 32 * e;
              live[q][e] = r < ib && col < jb && j0 + col <= i0 + r;
              v[q][e] = live[q][e] ? l[static_cast<size_t>(i0 + r) * n + j0 + col] : 0.0;
            }
          }
          for (uint32_t c = 0; c < kb; ++c) {
            double x[kRowsPerThread], y[kColsPerLane];
            KVC_UNROLL
            for (uint32_t q = 0; q < kRowsPerThread; ++q) x[q] = panelI[(warp + kCholWarps * q) * kTileStride + c];
            KVC_UNROLL
            for (uint32_t e = 0; e < kColsPerLane; ++e) y[e] = pj[(lane + 32 * e) * kTileStride + c];
            KVC_UNROLL
            for (uint32_t q = 0; q < kRowsPerThread; ++q) {
              KVC_UNROLL
              for (uint32_t e = 0; e < kColsPerLane; ++e) v[q][e] -= x[q] * y[e];
            }
          }
          KVC_UNROLL
          for (uint32_t q = 0; q < kRowsPerThread; ++q) {
            KVC_UNROLL
            for (uint32_t e = 0; e < kColsPerLane; ++e) {
              const uint32_t r = warp + kCholWarps * q, col = lane + 32 * e;
              if (live[q][e]) l[static_cast<size_t>(i0 + r) * n + j0 + col] = v[q][e];
            }
          }
          __syncthreads();  // panelJ is reloaded next
        }
      }
    }
    ok = !failed;
    __syncthreads();
    if (!ok) {
      lambda *= 100.0;
      ++raises;
    }
  }
  if (tid == 0) {
    *job.lambda = ok ? lambda : -1.0;
    if (job.raises) *job.raises += raises;
  }
  if (job.hr) {
    const double add = ok ? lambda : 0.0;
    for (uint32_t i = tid; i < n; i += kCholThreads) job.hr[i] = static_cast<double>(job.h[i]) + add;
  }
}

// Grid (ceil(maxRhs / 64), jobs): thread c solves column c; a warp reads 32 consecutive
// doubles of each row of b and one broadcast entry of L.
__global__ KVC_LAUNCH_BOUNDS(64, 8) void choleskySolveKernel(const SolveJob* jobs) {
  const SolveJob& job = jobs[blockIdx.y];
  const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= job.nrhs || (job.lambda && !(*job.lambda >= 0.0))) return;
  const uint32_t n = job.size, ld = job.nrhs;
  const double* l = job.l;
  double* b = job.b + c;
  for (uint32_t i = 0; i < n; ++i) {
    const double* li = l + static_cast<size_t>(i) * n;
    double s = b[static_cast<size_t>(i) * ld];
    for (uint32_t k = 0; k < i; ++k) s -= li[k] * b[static_cast<size_t>(k) * ld];
    b[static_cast<size_t>(i) * ld] = s * (1.0 / li[i]);
  }
  for (uint32_t i = n; i-- > 0;) {
    const double* li = l + static_cast<size_t>(i) * n;
    const double xi = b[static_cast<size_t>(i) * ld] * (1.0 / li[i]);
    b[static_cast<size_t>(i) * ld] = xi;
    for (uint32_t k = 0; k < i; ++k) b[static_cast<size_t>(k) * ld] -= li[k] * xi;
  }
}

// One warp per problem (block of 32).
__global__ KVC_LAUNCH_BOUNDS(32, 16) void nnlsKernel(const NnlsJob* jobs, float minWeight, float maxWeight,
                                                     uint32_t sweeps) {
  const NnlsJob& job = jobs[blockIdx.x];
  const uint32_t n = job.f;
  const unsigned lane = threadIdx.x;
  if (n == 0) return;
  const double rawLambda = *job.lambda, lambda = rawLambda > 0.0 ? rawLambda : 0.0;
  const double lo = minWeight, hi = maxWeight;
  double* w = job.w;
  double* grad = job.grad;
  // w holds the ridge solution of hr = h + λ (solved in place) unless every factorization failed.
  for (uint32_t j = lane; j < n; j += 32) {
    double x = rawLambda >= 0.0 ? w[j] : 1.0;
    if (!isfinite(x)) x = 1.0;
    w[j] = fmin(hi, fmax(lo, x));
  }
  __syncwarp();
  for (uint32_t j = lane; j < n; j += 32) {
    double s = 0.0;
    for (uint32_t k = 0; k < n; ++k) s += regAt(job.gram, n, j, k, lambda) * w[k];
    grad[j] = s - (static_cast<double>(job.h[j]) + lambda);
  }
  __syncwarp();
  for (uint32_t sweep = 0; sweep < sweeps; ++sweep) {
    bool moved = false;
    for (uint32_t j = 0; j < n; ++j) {
      const double diag = regAt(job.gram, n, j, j, lambda);
      if (!(diag > 0.0)) continue;
      const double wj = w[j];
      const double next = fmin(hi, fmax(lo, wj - grad[j] / diag));
      const double d = next - wj;
      if (d == 0.0) continue;  // every lane computed the same d
      if (fabs(d) > 1e-7 * (1.0 + fabs(wj))) moved = true;
      __syncwarp();
      if (lane == 0) w[j] = next;
      for (uint32_t k = lane; k < n; k += 32) grad[k] += d * regAt(job.gram, n, j, k, lambda);
      __syncwarp();
    }
    if (!moved) break;
  }
  for (uint32_t c = lane; c < n; c += 32) {
    const int32_t p = job.freePos[c];
    job.beta[p] = job.keptBias[p] + static_cast<float>(log(w[c]));
  }
}

}  // namespace

cudaError_t launchCholeskyRidge(const CholeskyJob* jobs, uint32_t count, float ridge, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  KVC_LAUNCH(choleskyRidgeKernel, dim3(count), dim3(kCholThreads), 0, stream)(jobs, ridge);
  return cudaGetLastError();
}

cudaError_t launchCholeskySolve(const SolveJob* jobs, uint32_t count, uint32_t maxRhs, cudaStream_t stream) {
  if (count == 0 || maxRhs == 0) return cudaSuccess;
  KVC_LAUNCH(choleskySolveKernel, dim3((maxRhs + 63) / 64, count), dim3(64), 0, stream)(jobs);
  return cudaGetLastError();
}

cudaError_t launchNnls(const NnlsJob* jobs, uint32_t count, float minWeight, float maxWeight, uint32_t sweeps,
                       cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  KVC_LAUNCH(nnlsKernel, dim3(count), dim3(32), 0, stream)(jobs, minWeight, maxWeight, sweeps);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
