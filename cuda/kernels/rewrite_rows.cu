// rewriteRows: re-encodes the values and/or beta of existing rows of one stream (the fitted
// values and biases of a compaction). Values go through append's write path (row_writer.cuh),
// so a rewritten row is byte-identical to one appended with the same input. Keys and
// positions are never touched.
#include "kernel_args.h"
#include "row_writer.cuh"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarpsPerBlock = 4;

// Grid: ceil(count / 4) blocks of 4 warps, one warp per row; dynamic shared memory
// 4 * 2 * headDim floats (0 when only beta is rewritten).
__global__ KVC_LAUNCH_BOUNDS(128, 4) void rewriteRowsKernel(RewriteRowsArgs a) {
  KVC_DYNAMIC_SHARED(float, smem);
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t i = blockIdx.x * kWarpsPerBlock + warp;
  if (i >= a.count) return;  // whole warp leaves together
  const uint32_t D = valueWidth(a.codec);  // only value rows are rewritten
  const BlockLayout& L = a.pool.layout;
  const uint32_t r = a.start + i;
  const int32_t block = a.blockTable[static_cast<int32_t>(r / L.blockSize) - a.firstBlock];
  const uint32_t slot = r % L.blockSize;
  uint8_t* base = a.pool.base + static_cast<uint64_t>(block) * L.blockBytes;
  if (a.values) {
    float* x = smem + warp * 2 * D;
    writeRow(a.values, InputType::kF32, i, a.codec.valueSigns, a.codec.valueStorage, D, a.codec.groupSize, x, x + D,
             base + L.valuesOffset + slot * L.valueRowBytes, lane);
  }
  if (a.beta && lane == 0) reinterpret_cast<float*>(base + L.betaOffset)[slot] = a.beta[i];
}

}  // namespace

cudaError_t launchRewriteRows(const RewriteRowsArgs& args, cudaStream_t stream) {
  if (args.count == 0 || (!args.values && !args.beta)) return cudaSuccess;
  const unsigned blocks = (args.count + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const size_t smem = args.values ? kWarpsPerBlock * 2 * valueWidth(args.codec) * sizeof(float) : 0;
  KVC_LAUNCH(rewriteRowsKernel, dim3(blocks), dim3(32 * kWarpsPerBlock), smem, stream)(args);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
