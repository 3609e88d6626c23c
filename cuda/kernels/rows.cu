// Row data movement: readRows (decode rows to f32, undoing the rotation), gatherRows
// (bit-exact row moves, through a staging buffer so source and destination may share
// blocks) and copyBlocks (whole blocks, for copy-on-write).
#include "hadamard.cuh"
#include "kernel_args.h"
#include "row_codec.cuh"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarpsPerBlock = 4;

__device__ __forceinline__ void decodeRow(const uint8_t* row, Storage storage, const float* signs, uint32_t D,
                                          uint32_t groupSize, float* x, float* out, unsigned lane) {
  for (uint32_t d = lane; d < D; d += 32) x[d] = decodeElement(row, storage, D, groupSize, d);
  if (signs) {
    rotateInverse(x, signs, D, lane, 32, WarpSync());
  } else {
    __syncwarp();
  }
  if (out) {
    for (uint32_t d = lane; d < D; d += 32) out[d] = x[d];
  }
  __syncwarp();
}

// One warp per row; dynamic shared memory 4 * max(headDim, value width) floats.
__global__ KVC_LAUNCH_BOUNDS(128, 4) void readRowsKernel(ReadRowsArgs a) {
  KVC_DYNAMIC_SHARED(float, smem);
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t i = blockIdx.x * kWarpsPerBlock + warp;
  if (i >= a.count) return;
  const uint32_t D = a.codec.headDim, VD = valueWidth(a.codec);
  const BlockLayout& L = a.pool.layout;
  const uint32_t r = a.start + i;
  const int32_t block = a.blockTable[static_cast<int32_t>(r / L.blockSize) - a.firstBlock];
  const uint32_t slot = r % L.blockSize;
  const uint8_t* base = a.pool.base + static_cast<uint64_t>(block) * L.blockBytes;
  float* x = smem + warp * (D > VD ? D : VD);
  decodeRow(base + slot * L.keyRowBytes, a.codec.keyStorage, a.codec.keySigns, D, a.codec.groupSize, x,
            a.keys ? a.keys + static_cast<size_t>(i) * D : nullptr, lane);
  decodeRow(base + L.valuesOffset + slot * L.valueRowBytes, a.codec.valueStorage, a.codec.valueSigns, VD,
            a.codec.groupSize, x, a.values ? a.values + static_cast<size_t>(i) * VD : nullptr, lane);
  if (lane == 0) {
    if (a.beta) a.beta[i] = reinterpret_cast<const float*>(base + L.betaOffset)[slot];
    if (a.positions) a.positions[i] = reinterpret_cast<const int32_t*>(base + L.positionsOffset)[slot];
  }
}

// Word pointers of row r of a stream: key row, value row, beta, position. Row sizes are
// multiples of 4 bytes (formats.h), so rows move as 32-bit words.
struct RowWords {
  uint32_t* key;
  uint32_t* value;
  uint32_t* beta;
  uint32_t* position;
};

__device__ __forceinline__ RowWords rowWords(const PoolView& pool, const int32_t* table, uint32_t r) {
  const BlockLayout& L = pool.layout;
  uint8_t* base = pool.base + static_cast<uint64_t>(table[r / L.blockSize]) * L.blockBytes;
  const uint32_t slot = r % L.blockSize;
  return RowWords{reinterpret_cast<uint32_t*>(base + slot * L.keyRowBytes),
                  reinterpret_cast<uint32_t*>(base + L.valuesOffset + slot * L.valueRowBytes),
                  reinterpret_cast<uint32_t*>(base + L.betaOffset) + slot,
                  reinterpret_cast<uint32_t*>(base + L.positionsOffset) + slot};
}

// Staging row layout: key words | value words | beta | position.
template <bool kToStaging>
__global__ KVC_LAUNCH_BOUNDS(128, 4) void gatherKernel(GatherArgs a) {
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t i = blockIdx.x * kWarpsPerBlock + warp;
  if (i >= a.count) return;
  const BlockLayout& L = a.pool.layout;
  const uint32_t keyWords = L.keyRowBytes / 4, valueWords = L.valueRowBytes / 4;
  uint32_t* staged = a.staging + static_cast<size_t>(i) * a.rowWords;
  const RowWords row = kToStaging ? rowWords(a.pool, a.srcTable, static_cast<uint32_t>(a.srcRows[i]))
                                  : rowWords(a.pool, a.dstTable, a.dstStart + i);
  for (uint32_t w = lane; w < keyWords; w += 32) {
    if (kToStaging) staged[w] = row.key[w]; else row.key[w] = staged[w];
  }
  for (uint32_t w = lane; w < valueWords; w += 32) {
    if (kToStaging) staged[keyWords + w] = row.value[w]; else row.value[w] = staged[keyWords + w];
  }
  if (lane == 0) {
    uint32_t* tail = staged + keyWords + valueWords;
    if (kToStaging) {
      tail[0] = *row.beta;
      tail[1] = *row.position;
    } else {
      *row.beta = tail[0];
      *row.position = tail[1];
    }
  }
}

// One block per copy; 16-byte words (blockBytes is a multiple of 64).
__global__ KVC_LAUNCH_BOUNDS(256, 4) void copyBlocksKernel(uint8_t* pool, uint32_t blockBytes, const int32_t* src,
                                                        const int32_t* dst) {
  const uint4* from = reinterpret_cast<const uint4*>(pool + static_cast<uint64_t>(src[blockIdx.x]) * blockBytes);
  uint4* to = reinterpret_cast<uint4*>(pool + static_cast<uint64_t>(dst[blockIdx.x]) * blockBytes);
  for (uint32_t w = threadIdx.x; w < blockBytes / 16; w += blockDim.x) to[w] = from[w];
}

}  // namespace

cudaError_t launchReadRows(const ReadRowsArgs& args, cudaStream_t stream) {
  if (args.count == 0) return cudaSuccess;
  const unsigned blocks = (args.count + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const uint32_t VD = valueWidth(args.codec);
  const size_t smem = kWarpsPerBlock * (args.codec.headDim > VD ? args.codec.headDim : VD) * sizeof(float);
  KVC_LAUNCH(readRowsKernel, dim3(blocks), dim3(32 * kWarpsPerBlock), smem, stream)(args);
  return cudaGetLastError();
}

cudaError_t launchGatherRows(const GatherArgs& args, cudaStream_t stream) {
  if (args.count == 0) return cudaSuccess;
  const unsigned blocks = (args.count + kWarpsPerBlock - 1) / kWarpsPerBlock;
  auto toStaging = gatherKernel<true>;
  auto fromStaging = gatherKernel<false>;
  KVC_LAUNCH(toStaging, dim3(blocks), dim3(32 * kWarpsPerBlock), 0, stream)(args);
  KVC_LAUNCH(fromStaging, dim3(blocks), dim3(32 * kWarpsPerBlock), 0, stream)(args);
  return cudaGetLastError();
}

cudaError_t launchCopyBlocks(uint8_t* pool, uint32_t blockBytes, const int32_t* src, const int32_t* dst,
                             uint32_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  KVC_LAUNCH(copyBlocksKernel, dim3(count), dim3(256), 0, stream)(pool, blockBytes, src, dst);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
