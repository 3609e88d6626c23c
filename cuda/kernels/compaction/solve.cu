// The f64 solves of compaction, batched over problems: Cholesky of G + λI with the ridge
// raised ×100 (up to five times) when a pivot fails (one block per problem, left-looking:
// column j's entries below the diagonal are independent dot products, one warp each), the
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

constexpr unsigned kCholThreads = 128, kCholWarps = kCholThreads / 32;

__device__ __forceinline__ double warpSumD(double v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// A(i, j) of the regularized matrix, read from the f32 Gram matrix.
__device__ __forceinline__ double regAt(const float* g, uint32_t size, uint32_t i, uint32_t j, double lambda) {
  const double v = static_cast<double>(g[static_cast<size_t>(i) * size + j]);
  return i == j ? v + lambda : v;
}

__global__ KVC_LAUNCH_BOUNDS(128, 4) void choleskyRidgeKernel(const CholeskyJob* jobs, float ridge) {
  __shared__ double partial[kCholWarps];
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
    __syncthreads();
    for (uint32_t j = 0; j < n; ++j) {
      // Diagonal: A_jj − Σ_{k<j} L_jk², reduced over the block.
      const double* lj = l + static_cast<size_t>(j) * n;
      double s = 0.0;
      for (uint32_t k = tid; k < j; k += kCholThreads) s += lj[k] * lj[k];
      s = warpSumD(s);
      if (lane == 0) partial[warp] = s;
      __syncthreads();
      if (tid == 0) {
        double t = 0.0;
        for (unsigned w = 0; w < kCholWarps; ++w) t += partial[w];
        const double d = regAt(job.gram, n, j, j, lambda) - t;
        if (!(d > 0.0) || !isfinite(d)) {
          failed = 1;
        } else {
          l[static_cast<size_t>(j) * n + j] = sqrt(d);
        }
      }
      __syncthreads();
      if (failed) break;  // uniform: every thread read the same flag after the barrier
      const double inv = 1.0 / lj[j];
      for (uint32_t i = j + 1 + warp; i < n; i += kCholWarps) {
        const double* li = l + static_cast<size_t>(i) * n;
        double dot = 0.0;
        for (uint32_t k = lane; k < j; k += 32) dot += li[k] * lj[k];
        dot = warpSumD(dot);
        if (lane == 0) l[static_cast<size_t>(i) * n + j] = (regAt(job.gram, n, i, j, lambda) - dot) * inv;
      }
      __syncthreads();
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
