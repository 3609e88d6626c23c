// Compaction inputs on the device: the rows of each stream decoded from the pool into f32
// scratch (keys as stored, in the rotated space attention uses; values with the rotation
// undone, as readRows returns them), the protected-row flags, and the reference queries
// rotated into the keys' space and scaled by 1/√D. Nothing here leaves the device.
#include "../hadamard.cuh"
#include "../kernel_args.h"
#include "../row_codec.cuh"
#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarps = 4;

// Grid (ceil(maxLength / 4), streams), 4 warps, one warp per row; dynamic shared memory
// 4 · max(headDim, value width) floats (value rows are valueWidth wide: low-rank ranks may differ).
__global__ KVC_LAUNCH_BOUNDS(128, 4) void decodeRowsKernel(DecodeArgs a) {
  KVC_DYNAMIC_SHARED(float, smem);
  const DecodeStream& s = a.streams[blockIdx.y];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t r = blockIdx.x * kWarps + warp;
  if (r >= s.length) return;  // whole warp leaves together
  const uint32_t D = a.codec.headDim, VD = valueWidth(a.codec);
  const BlockLayout& L = a.pool.layout;
  const uint8_t* base = a.pool.base + static_cast<uint64_t>(s.blockTable[r / L.blockSize]) * L.blockBytes;
  const uint32_t slot = r % L.blockSize;
  if (s.keys && !(a.keysOriginal && a.codec.keySigns)) {
    const uint8_t* row = base + slot * L.keyRowBytes;
    for (uint32_t d = lane; d < D; d += 32)
      s.keys[static_cast<size_t>(r) * D + d] = decodeElement(row, a.codec.keyStorage, D, a.codec.groupSize, d);
  } else if (s.keys) {
    float* x = smem + warp * (D > VD ? D : VD);
    const uint8_t* row = base + slot * L.keyRowBytes;
    for (uint32_t d = lane; d < D; d += 32) x[d] = decodeElement(row, a.codec.keyStorage, D, a.codec.groupSize, d);
    rotateInverse(x, a.codec.keySigns, D, lane, 32, WarpSync());
    for (uint32_t d = lane; d < D; d += 32) s.keys[static_cast<size_t>(r) * D + d] = x[d];
    __syncwarp();
  }
  if (s.values) {
    float* x = smem + warp * (D > VD ? D : VD);
    const uint8_t* row = base + L.valuesOffset + slot * L.valueRowBytes;
    for (uint32_t d = lane; d < VD; d += 32) x[d] = decodeElement(row, a.codec.valueStorage, VD, a.codec.groupSize, d);
    if (a.codec.valueSigns) {
      rotateInverse(x, a.codec.valueSigns, VD, lane, 32, WarpSync());  // VD == D with value rotation
    } else {
      __syncwarp();
    }
    for (uint32_t d = lane; d < VD; d += 32) s.values[static_cast<size_t>(r) * VD + d] = x[d];
    __syncwarp();
  }
  if (lane == 0) {
    if (s.bias) s.bias[r] = reinterpret_cast<const float*>(base + L.betaOffset)[slot];
    if (s.protectedRows) s.protectedRows[r] = (r < s.sinks || r + s.recent >= s.length) ? 1 : 0;
  }
}

// Grid (ceil(maxN / 4), jobs), one warp per query row; dynamic shared 4 · D floats.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void prepareQueriesKernel(const QueryJob* jobs, uint32_t D, const float* signs,
                                                               float scale) {
  KVC_DYNAMIC_SHARED(float, smem);
  const QueryJob& j = jobs[blockIdx.y];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t i = blockIdx.x * kWarps + warp;
  if (i >= j.n) return;
  const size_t src = j.srcRows ? static_cast<size_t>(static_cast<uint64_t>(i) * j.srcRows / j.n) : i;
  float* x = smem + warp * D;
  for (uint32_t d = lane; d < D; d += 32) x[d] = j.src[src * D + d];
  if (j.rotate && signs) {
    rotateForward(x, signs, D, lane, 32, WarpSync());
  } else {
    __syncwarp();
  }
  for (uint32_t d = lane; d < D; d += 32) j.out[static_cast<size_t>(i) * D + d] = x[d] * scale;
  __syncwarp();
}

}  // namespace

cudaError_t launchDecodeRows(const DecodeArgs& args, uint32_t maxLength, cudaStream_t stream) {
  if (args.count == 0 || maxLength == 0) return cudaSuccess;
  const uint32_t VD = valueWidth(args.codec), W = args.codec.headDim > VD ? args.codec.headDim : VD;
  const size_t smem = kWarps * W * sizeof(float);
  KVC_LAUNCH(decodeRowsKernel, dim3((maxLength + kWarps - 1) / kWarps, args.count), dim3(32 * kWarps), smem, stream)(args);
  return cudaGetLastError();
}

cudaError_t launchPrepareQueries(const QueryJob* jobs, uint32_t count, uint32_t maxN, uint32_t D, const float* keySigns,
                                 float scale, cudaStream_t stream) {
  if (count == 0 || maxN == 0) return cudaSuccess;
  KVC_LAUNCH(prepareQueriesKernel, dim3((maxN + kWarps - 1) / kWarps, count), dim3(32 * kWarps),
             kWarps * D * sizeof(float), stream)(jobs, D, keySigns, scale);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
