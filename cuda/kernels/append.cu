// append: converts, rotates and quantizes T new rows per stream into their blocks in one
// pass (ARCHITECTURE §3 "quantization is fused into append"). One warp per (token, stream)
// row; the row is staged in shared memory because rotation and group statistics need all
// of it.
#include "kernel_args.h"
#include "row_writer.cuh"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarpsPerBlock = 4;

// Grid: ceil(T * S / 4) blocks of 4 warps; dynamic shared memory 4 * 2 * max(headDim, value
// width) floats.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void appendKernel(AppendArgs a) {
  KVC_DYNAMIC_SHARED(float, smem);
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t D = a.codec.headDim, VD = valueWidth(a.codec), W = D > VD ? D : VD;
  const uint64_t row = static_cast<uint64_t>(blockIdx.x) * kWarpsPerBlock + warp;  // t * S + s
  if (row >= static_cast<uint64_t>(a.tokens) * a.streamCount) return;  // whole warp leaves together
  const uint32_t t = static_cast<uint32_t>(row / a.streamCount), s = static_cast<uint32_t>(row % a.streamCount);
  float* x = smem + warp * 2 * W;
  float* aux = x + W;

  const BlockLayout& L = a.pool.layout;
  const int32_t r = a.startRow[s] + static_cast<int32_t>(t);
  const TableSlice slice = a.slices[s];
  const int32_t block = a.tables[slice.offset + r / static_cast<int32_t>(L.blockSize) - slice.firstBlock];
  const uint32_t slot = static_cast<uint32_t>(r) % L.blockSize;
  uint8_t* base = a.pool.base + static_cast<uint64_t>(block) * L.blockBytes;

  writeRow(a.keys, a.inputType, row, a.codec.keySigns, a.codec.keyStorage, D, a.codec.groupSize, x, aux,
           base + slot * L.keyRowBytes, lane);
  writeRow(a.values, a.inputType, row, a.codec.valueSigns, a.codec.valueStorage, VD, a.codec.groupSize, x, aux,
           base + L.valuesOffset + slot * L.valueRowBytes, lane);
  if (lane == 0) {
    reinterpret_cast<float*>(base + L.betaOffset)[slot] = a.beta ? a.beta[row] : 0.0f;
    reinterpret_cast<int32_t*>(base + L.positionsOffset)[slot] = a.positions[t];
  }
}

}  // namespace

cudaError_t launchAppend(const AppendArgs& args, cudaStream_t stream) {
  const uint64_t rows = static_cast<uint64_t>(args.tokens) * args.streamCount;
  if (rows == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const uint32_t VD = valueWidth(args.codec);
  const size_t smem = kWarpsPerBlock * 2 * (args.codec.headDim > VD ? args.codec.headDim : VD) * sizeof(float);
  KVC_LAUNCH(appendKernel, dim3(blocks), dim3(32 * kWarpsPerBlock), smem, stream)(args);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
