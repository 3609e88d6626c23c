// The end of a compaction batch on the device: per stream, the chunks' per-query statistics
// merged (log-sum-exp, chunk order) and reduced to the two error numbers of the report; per
// kept row, whether the fit changed it; and applyCompactionFit's re-encoding of the changed
// rows through append's write path. Formulas: cpp/core/compaction/compaction.cpp
// mergeStats / errors and sequence_compactor.cpp (changed rows).
#include <cmath>

#include "../kernel_args.h"
#include "../row_writer.cuh"
#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

#if !defined(__CUDACC__)
using std::isfinite;  // the device build has it as a global function
#endif

namespace {

constexpr unsigned kErrThreads = 128, kWarps = 4;

__device__ __forceinline__ double warpSumD(double v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// acc ⊕= s for query i (the merged statistics accumulate in chunk 0's buffers).
__device__ void mergeQuery(const QueryStatsDev& acc, const QueryStatsDev& s, uint32_t i, uint32_t D) {
  const float za = acc.z[i], zb = s.z[i];
  if (!(zb > 0.0f)) return;
  float* y = acc.y + static_cast<size_t>(i) * D;
  const float* yb = s.y + static_cast<size_t>(i) * D;
  if (!(za > 0.0f)) {
    for (uint32_t d = 0; d < D; ++d) y[d] = yb[d];
    acc.m[i] = s.m[i];
    acc.z[i] = zb;
    return;
  }
  const float m = fmaxf(acc.m[i], s.m[i]);
  const double wa = za * exp(static_cast<double>(acc.m[i]) - m), wb = zb * exp(static_cast<double>(s.m[i]) - m);
  const double inv = 1.0 / (wa + wb);
  for (uint32_t d = 0; d < D; ++d) y[d] = static_cast<float>((wa * y[d] + wb * yb[d]) * inv);
  acc.m[i] = m;
  acc.z[i] = static_cast<float>(wa + wb);
}

// One block per stream.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void errorsKernel(const ErrorJob* jobs, uint32_t D) {
  __shared__ double partial[3][kErrThreads / 32];
  const ErrorJob& j = jobs[blockIdx.x];
  const unsigned tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  if (j.nq == 0) {
    if (tid == 0) j.out[0] = j.out[1] = NAN;
    return;
  }
  double num = 0.0, den = 0.0, mass = 0.0;
  for (uint32_t i = tid; i < j.nq; i += kErrThreads) {
    for (uint32_t c = 1; c < j.chunks; ++c) {
      mergeQuery(j.ref[0], j.ref[c], i, D);
      mergeQuery(j.got[0], j.got[c], i, D);
    }
    const float* yr = j.ref[0].y + static_cast<size_t>(i) * D;
    const float* yg = j.got[0].y + static_cast<size_t>(i) * D;
    for (uint32_t d = 0; d < D; ++d) {
      const double diff = static_cast<double>(yg[d]) - yr[d];
      num += diff * diff;
      den += static_cast<double>(yr[d]) * yr[d];
    }
    const double lse = j.ref[0].m[i] + log(static_cast<double>(j.ref[0].z[i]));
    const double lseC = j.got[0].m[i] + log(static_cast<double>(j.got[0].z[i]));
    const double ratio = exp(lseC - lse);
    mass += isfinite(ratio) ? fabs(ratio - 1.0) : 1.0;
  }
  num = warpSumD(num);
  den = warpSumD(den);
  mass = warpSumD(mass);
  if (lane == 0) {
    partial[0][warp] = num;
    partial[1][warp] = den;
    partial[2][warp] = mass;
  }
  __syncthreads();
  if (tid == 0) {
    double a = 0.0, b = 0.0, c = 0.0;
    for (unsigned w = 0; w < kErrThreads / 32; ++w) {
      a += partial[0][w];
      b += partial[1][w];
      c += partial[2][w];
    }
    j.out[0] = static_cast<float>(b > 0.0 ? sqrt(a / b) : sqrt(a));
    j.out[1] = static_cast<float>(c / j.nq);
  }
}

// Grid (ceil(maxT / 4), jobs), one warp per kept row.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void changedRowsKernel(const ChangedJob* jobs, uint32_t D) {
  const ChangedJob& j = jobs[blockIdx.y];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t c = blockIdx.x * kWarps + warp;
  if (c >= j.t) return;
  const size_t row = static_cast<size_t>(j.keep[c]);
  bool differs = false;
  for (uint32_t d = lane; d < D; d += 32)
    differs |= __float_as_uint(j.fitted[static_cast<size_t>(c) * D + d]) != __float_as_uint(j.values[row * D + d]);
  differs |= __float_as_uint(j.beta[c]) != __float_as_uint(j.bias[row]);
  const bool any = __any_sync(0xFFFFFFFFu, differs);
  if (lane == 0) {
    j.changed[c] = any ? 1 : 0;
    if (any) atomicAdd(j.count, 1u);
  }
}

// Grid ceil(count / 4) blocks of 4 warps, one warp per row; dynamic shared 4 · 2 · VD floats
// (VD: the value rows' width).
__global__ KVC_LAUNCH_BOUNDS(128, 4) void applyFitKernel(ApplyFitArgs a) {
  KVC_DYNAMIC_SHARED(float, smem);
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t i = blockIdx.x * kWarps + warp;
  if (i >= a.count || !a.changed[i]) return;  // whole warp leaves together
  const uint32_t D = valueWidth(a.codec);
  const BlockLayout& L = a.pool.layout;
  const int32_t block = a.blockTable[i / L.blockSize];
  const uint32_t slot = i % L.blockSize;
  uint8_t* base = a.pool.base + static_cast<uint64_t>(block) * L.blockBytes;
  float* x = smem + warp * 2 * D;
  writeRow(a.values, InputType::kF32, i, a.codec.valueSigns, a.codec.valueStorage, D, a.codec.groupSize, x, x + D,
           base + L.valuesOffset + slot * L.valueRowBytes, lane);
  if (lane == 0) reinterpret_cast<float*>(base + L.betaOffset)[slot] = a.beta[i];
}

}  // namespace

cudaError_t launchErrors(const ErrorJob* jobs, uint32_t count, uint32_t D, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  KVC_LAUNCH(errorsKernel, dim3(count), dim3(kErrThreads), 0, stream)(jobs, D);
  return cudaGetLastError();
}

cudaError_t launchChangedRows(const ChangedJob* jobs, uint32_t count, uint32_t maxT, uint32_t D, cudaStream_t stream) {
  if (count == 0 || maxT == 0) return cudaSuccess;
  KVC_LAUNCH(changedRowsKernel, dim3((maxT + kWarps - 1) / kWarps, count), dim3(32 * kWarps), 0, stream)(jobs, D);
  return cudaGetLastError();
}

cudaError_t launchApplyFit(const ApplyFitArgs& args, cudaStream_t stream) {
  if (args.count == 0) return cudaSuccess;
  const size_t smem = kWarps * 2 * valueWidth(args.codec) * sizeof(float);
  KVC_LAUNCH(applyFitKernel, dim3((args.count + kWarps - 1) / kWarps), dim3(32 * kWarps), smem, stream)(args);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
