// OMP selection on the device (cpp/core/compaction/chunk_compactor.cpp selectOmp): greedy steps
// that add the rows most correlated with the unexplained attention mass, refit their weights
// (warm-started coordinate descent) and update the residual. Every step is a fixed sequence of
// launches over all OMP chunks of a batch; the per-chunk state (rows picked, done) lives on the
// device, so the host never waits on a step's result.
#include <cmath>

#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

#if !defined(__CUDACC__)
using std::isfinite;
#endif

namespace {

constexpr unsigned kThreads = 128, kWarps = kThreads / 32;

__device__ __forceinline__ double warpSumD(double v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// Σ over the block of v (f64); every thread gets the total.
__device__ __forceinline__ double blockSumD(double v, double* sh) {
  v = warpSumD(v);
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  double t = 0.0;
  for (unsigned w = 0; w < kWarps; ++w) t += sh[w];
  __syncthreads();
  return t;
}

// One block per chunk: protected rows chosen, E scaled to A = E / z (relative objective),
// the free rows' target zp = 1 (or z) − the protected rows' mass, residual = zp.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void ompInitKernel(const OmpJob* jobs) {
  __shared__ double sh[kWarps];
  const OmpJob& j = jobs[blockIdx.x];
  const unsigned tid = threadIdx.x;
  for (uint32_t c = tid; c < j.Tk; c += kThreads) j.chosen[c] = j.prot[c];
  if (j.relative) {
    for (uint32_t i = 0; i < j.n; ++i) {
      const float z = j.z[i], inv = z > 0.0f ? 1.0f / z : 0.0f;
      float* row = j.e + static_cast<size_t>(i) * j.Tk;
      for (uint32_t c = tid; c < j.Tk; c += kThreads) row[c] *= inv;
    }
    __syncthreads();
  }
  double norm = 0.0;
  for (uint32_t i = tid; i < j.n; i += kThreads) {
    double zp = j.relative ? 1.0 : static_cast<double>(j.z[i]);
    const float* row = j.e + static_cast<size_t>(i) * j.Tk;
    for (uint32_t c = 0; c < j.Tk; ++c)
      if (j.prot[c]) zp -= row[c];
    j.zpf[i] = j.residual[i] = static_cast<float>(zp);
    norm += zp * zp;
  }
  norm = blockSumD(norm, sh);
  if (tid == 0) {
    *j.targetNorm = sqrt(norm);
    j.state[0] = j.state[1] = j.state[2] = j.state[3] = 0;
  }
}

// One block per chunk: the stop test of this step and its k.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void ompTestKernel(const OmpJob* jobs, float tolerance) {
  __shared__ double sh[kWarps];
  const OmpJob& j = jobs[blockIdx.x];
  if (j.state[1]) return;
  double rn = 0.0;
  for (uint32_t i = threadIdx.x; i < j.n; i += kThreads) rn += static_cast<double>(j.residual[i]) * j.residual[i];
  rn = blockSumD(rn, sh);
  if (threadIdx.x != 0) return;
  const uint32_t have = j.state[0];
  // Once the mass is explained, further picks only chase noise: stop, the fill takes over.
  if (have >= j.want || (have > 0 && sqrt(rn) <= tolerance * *j.targetNorm)) {
    j.state[1] = 1;
    j.state[2] = 0;
  } else {
    j.state[2] = j.want - have < j.step ? j.want - have : j.step;
  }
}

// Grid (ceil(maxTk / 128), chunks): correlation of every column with the residual, per unit norm.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void ompCorrKernel(const OmpJob* jobs) {
  const OmpJob& j = jobs[blockIdx.y];
  const uint32_t c = blockIdx.x * kThreads + threadIdx.x;
  if (j.state[1] || c >= j.Tk) return;
  float acc = 0.0f;
  for (uint32_t i = 0; i < j.n; ++i) acc = fmaf(j.e[static_cast<size_t>(i) * j.Tk + c], j.residual[i], acc);
  j.corr[c] = acc;
  const double nsq = j.colNormSq[c];
  j.score[c] = nsq > 0.0 ? static_cast<float>(acc / sqrt(nsq)) : -INFINITY;
}

// One block per chunk: the picked columns appended to mt, the new Gram entries, h and the
// warm start of their weights.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void ompAppendKernel(const OmpJob* jobs, float minWeight) {
  const OmpJob& j = jobs[blockIdx.x];
  if (j.state[1]) return;
  const uint32_t got = j.state[3], have = j.state[0], total = have + got, n = j.n;
  if (got == 0) {
    if (threadIdx.x == 0) j.state[1] = 1;  // nothing left to pick
    return;
  }
  for (uint32_t e = threadIdx.x; e < got * n; e += kThreads) {
    const uint32_t b = e / n, i = e % n;
    j.mt[static_cast<size_t>(have + b) * n + i] = j.e[static_cast<size_t>(i) * j.Tk + j.fresh[b]];
  }
  __syncthreads();
  for (uint32_t e = threadIdx.x; e < total * got; e += kThreads) {
    const uint32_t a = e / got, b = e % got;
    const float* x = j.mt + static_cast<size_t>(a) * n;
    const float* y = j.mt + static_cast<size_t>(have + b) * n;
    float acc = 0.0f;
    for (uint32_t i = 0; i < n; ++i) acc = fmaf(x[i], y[i], acc);
    j.g[static_cast<size_t>(a) * j.want + have + b] = acc;
    j.g[static_cast<size_t>(have + b) * j.want + a] = acc;
  }
  for (uint32_t b = threadIdx.x; b < got; b += kThreads) {
    const float* y = j.mt + static_cast<size_t>(have + b) * n;
    float acc = 0.0f;
    for (uint32_t i = 0; i < n; ++i) acc = fmaf(y[i], j.zpf[i], acc);
    j.h[have + b] = acc;
    const double nsq = j.colNormSq[j.fresh[b]];
    j.w[have + b] = nsq > 0.0 ? fmax(static_cast<double>(minWeight), j.corr[j.fresh[b]] / nsq) : minWeight;
  }
  __syncthreads();
  if (threadIdx.x == 0) j.state[0] = total;
}

// One warp per chunk: the warm-started partial refit (nnlsCoordinateDescent on the f64 Gram
// matrix of the picked columns), then the residual.
__global__ KVC_LAUNCH_BOUNDS(32, 16) void ompRefitKernel(const OmpJob* jobs, float minWeight, float maxWeight,
                                                         uint32_t sweeps) {
  const OmpJob& j = jobs[blockIdx.x];
  if (j.state[1]) return;
  const unsigned lane = threadIdx.x;
  const uint32_t n = j.state[0], ld = j.want;
  const double lo = minWeight, hi = maxWeight;
  for (uint32_t c = lane; c < n; c += 32) j.w[c] = fmin(hi, fmax(lo, j.w[c]));
  __syncwarp();
  for (uint32_t c = lane; c < n; c += 32) {
    double s = 0.0;
    for (uint32_t k = 0; k < n; ++k) s += j.g[static_cast<size_t>(c) * ld + k] * j.w[k];
    j.grad[c] = s - j.h[c];
  }
  __syncwarp();
  for (uint32_t sweep = 0; sweep < sweeps; ++sweep) {
    bool moved = false;
    for (uint32_t c = 0; c < n; ++c) {
      const double* gc = j.g + static_cast<size_t>(c) * ld;
      const double diag = gc[c];
      if (!(diag > 0.0)) continue;
      const double wc = j.w[c];
      const double next = fmin(hi, fmax(lo, wc - j.grad[c] / diag));
      const double d = next - wc;
      if (d == 0.0) continue;
      if (fabs(d) > 1e-7 * (1.0 + fabs(wc))) moved = true;
      __syncwarp();
      if (lane == 0) j.w[c] = next;
      for (uint32_t k = lane; k < n; k += 32) j.grad[k] += d * gc[k];
      __syncwarp();
    }
    if (!moved) break;
  }
  for (uint32_t i = lane; i < j.n; i += 32) {
    float r = j.zpf[i];
    for (uint32_t c = 0; c < n; ++c) r -= static_cast<float>(j.w[c]) * j.mt[static_cast<size_t>(c) * j.n + i];
    j.residual[i] = r;
  }
}

__global__ void ompFinishKernel(const OmpJob* jobs) {
  const OmpJob& j = jobs[blockIdx.x];
  if (threadIdx.x == 0) j.state[2] = j.want - j.state[0];
}

}  // namespace

cudaError_t launchOmpInit(const OmpJob* jobs, uint32_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  KVC_LAUNCH(ompInitKernel, dim3(count), dim3(kThreads), 0, stream)(jobs);
  return cudaGetLastError();
}

cudaError_t launchOmpStep(const OmpJob* jobs, const TopKJob* stepTopK, uint32_t count, uint32_t maxTk, float tolerance,
                          float minWeight, float maxWeight, uint32_t sweeps, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  KVC_LAUNCH(ompTestKernel, dim3(count), dim3(kThreads), 0, stream)(jobs, tolerance);
  KVC_LAUNCH(ompCorrKernel, dim3((maxTk + kThreads - 1) / kThreads, count), dim3(kThreads), 0, stream)(jobs);
  cudaError_t e = launchTopK(stepTopK, count, stream);
  if (e != cudaSuccess) return e;
  KVC_LAUNCH(ompAppendKernel, dim3(count), dim3(kThreads), 0, stream)(jobs, minWeight);
  KVC_LAUNCH(ompRefitKernel, dim3(count), dim3(32), 0, stream)(jobs, minWeight, maxWeight, sweeps);
  return cudaGetLastError();
}

cudaError_t launchOmpFinish(const OmpJob* jobs, uint32_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  KVC_LAUNCH(ompFinishKernel, dim3(count), dim3(32), 0, stream)(jobs);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
