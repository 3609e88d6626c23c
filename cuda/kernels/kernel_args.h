// Argument structs of the CUDA kernels and their launchers. Every pointer is a device
// pointer; the backend (cuda/backend) stages host data into this form. Compiled by nvcc
// and, for the emulated build, by the host compiler.
#pragma once
#include <cstdint>

#include "../compat.cuh"
#include "kvc/views.h"

KVC_CUDA_NAMESPACE_BEGIN

// Floats per value row: RowCodec::valueDim when value rows are narrower or wider than key rows
// (low-rank values of another rank than the keys), else headDim.
#ifdef __CUDACC__
__host__ __device__
#endif
inline uint32_t valueWidth(const RowCodec& c) { return c.valueDim ? c.valueDim : c.headDim; }

// The part of one stream's block table that a launch touches: entry for row r is
// tables[offset + r / blockSize - firstBlock].
struct TableSlice {
  uint32_t offset = 0;
  int32_t firstBlock = 0;
};

struct AppendArgs {
  PoolView pool;
  RowCodec codec;                     // keySigns / valueSigns: device float[headDim] or nullptr
  uint32_t streamCount = 0;           // S
  uint32_t tokens = 0;                // T
  const int32_t* tables = nullptr;    // concatenated table slices
  const TableSlice* slices = nullptr; // [S]
  const int32_t* startRow = nullptr;  // [S]
  InputType inputType = InputType::kF32;
  const void* keys = nullptr;         // [T][S][headDim] f32 or f16 bits
  const void* values = nullptr;       // [T][S][valueWidth] f32 or f16 bits
  const int32_t* positions = nullptr; // [T]
  const float* beta = nullptr;        // [T][S] or nullptr for 0
};

// Attention splits every stream into row ranges of kAttentionSplitRows (the last one
// shorter), one thread block per (range, tile of query rows), and merges the partial softmax
// states afterwards. Fixed (not derived from the device's occupancy), like the CPU backend's
// split, so results do not depend on the GPU the kernel runs on. 512 rather than the CPU's
// 2048: one 16K-token decode of 8 kv heads is then 256 blocks, about two per SM of an H100,
// while a split's partial state (tq * G * (headDim + 2) floats) stays < 1% of the rows it
// summarizes (cuda/PERFORMANCE.md).
constexpr uint32_t kAttentionSplitRows = 512;

// Splits of a stream of `length` rows (one, empty, for an empty stream).
inline uint32_t attentionSplits(int32_t length) {
  return length <= 0 ? 1u : (static_cast<uint32_t>(length) + kAttentionSplitRows - 1) / kAttentionSplitRows;
}

// One split: rows [rowBegin, rowEnd) of stream `stream` (an empty range for an empty stream).
struct AttentionWork {
  uint32_t stream = 0;
  int32_t rowBegin = 0;
  int32_t rowEnd = 0;
};

struct AttentionStreamArgs {
  const int32_t* blockTable = nullptr;  // [ceil(length / blockSize)]
  int32_t length = 0;
  uint32_t firstWork = 0;               // this stream's splits are work[firstWork, firstWork + workCount)
  uint32_t workCount = 0;
  float* scores = nullptr;              // [length] attention mass accumulator, or nullptr
  float* logits = nullptr;              // [M][length] workspace when scores != nullptr (M = tq * G)
  const float* keyBasisT = nullptr;     // [headDim][liftDim] transposed key basis when liftDim > 0
};

struct AttentionArgs {
  PoolView pool;
  RowCodec codec;
  uint32_t streamCount = 0;               // S
  uint32_t queriesPerHead = 1;            // G
  uint32_t tq = 1;
  float scale = 1.0f;
  const AttentionStreamArgs* streams = nullptr;  // [S]
  const int32_t* queryPositions = nullptr;       // [S][tq], or nullptr: positions of each stream's last tq rows
  const float* queries = nullptr;                // [S][tq][G][liftDim or headDim]
  float* out = nullptr;                          // [S][tq][G][valueWidth]
  float* lse = nullptr;                          // [S][tq][G]
  const AttentionWork* work = nullptr;           // [W] splits, stream by stream
  uint32_t workCount = 0;                        // W
  float* partials = nullptr;                     // [W][tq * G][valueWidth + 2]: m, l, acc[valueWidth]
  bool anyScores = false;                        // some stream has scores (launch the mass pass)
  // Keys stored before RoPE (ropeDims > 0): the queries arrive rotated by their own positions
  // and the kernel rotates each back by a row's position before the dot (rope.cuh).
  uint32_t ropeDims = 0;
  uint32_t ropeStyle = 0;                        // 0 interleaved, 1 half (kvc/rope.h)
  bool ropeByRank = false;                       // row positions re-indexed by row index
  const float* ropeCos = nullptr;                // [kRopeLevels][kRopeLevelSize][ropeDims]
  const float* ropeSin = nullptr;                // same shape, signed per channel
  // > 0: key rows hold headDim coefficients of pre-RoPE keys; each tile is lifted to liftDim
  // floats with the stream's basis (keyBasisT) and rotated at its rows' positions in shared
  // memory before the dot (generic head_dim class only).
  uint32_t liftDim = 0;
};

struct ReadRowsArgs {
  PoolView pool;
  RowCodec codec;
  const int32_t* blockTable = nullptr;  // slice covering rows [start, start + count)
  int32_t firstBlock = 0;               // block index (in the stream) of blockTable[0]
  uint32_t start = 0;
  uint32_t count = 0;
  float* keys = nullptr;                // [count][headDim]
  float* values = nullptr;              // [count][valueWidth]
  float* beta = nullptr;                // [count]
  int32_t* positions = nullptr;         // [count]
};

// Gathers rows through a staging buffer (read all, then write all), so that source and
// destination may share blocks.
struct GatherArgs {
  PoolView pool;
  const int32_t* srcTable = nullptr;  // whole source table
  const int32_t* srcRows = nullptr;   // [count]
  const int32_t* dstTable = nullptr;  // whole destination table
  uint32_t dstStart = 0;
  uint32_t count = 0;
  uint32_t* staging = nullptr;        // [count][rowWords]
  uint32_t rowWords = 0;              // (keyRowBytes + valueRowBytes) / 4 + 2
};

// Re-encodes rows [start, start + count) of one stream: values through append's write path
// (rotated with codec.valueSigns, quantized to codec.valueStorage), beta copied.
struct RewriteRowsArgs {
  PoolView pool;
  RowCodec codec;                       // valueSigns: device float[headDim] or nullptr
  const int32_t* blockTable = nullptr;  // slice covering rows [start, start + count)
  int32_t firstBlock = 0;               // block index (in the stream) of blockTable[0]
  uint32_t start = 0;
  uint32_t count = 0;
  const float* values = nullptr;        // [count][valueWidth] f32, original space, or nullptr
  const float* beta = nullptr;          // [count], or nullptr
};

bool attentionSupportsHeadDim(uint32_t headDim);
// Query rows (tq * G of a stream, token-major) one thread block of the split kernel serves.
uint32_t attentionQueryTile(uint32_t headDim);
cudaError_t launchAppend(const AppendArgs& args, cudaStream_t stream);
cudaError_t launchAttention(const AttentionArgs& args, cudaStream_t stream);
cudaError_t launchReadRows(const ReadRowsArgs& args, cudaStream_t stream);
cudaError_t launchGatherRows(const GatherArgs& args, cudaStream_t stream);
cudaError_t launchRewriteRows(const RewriteRowsArgs& args, cudaStream_t stream);
// src[i] -> dst[i], whole blocks; src and dst are device int32[count].
cudaError_t launchCopyBlocks(uint8_t* pool, uint32_t blockBytes, const int32_t* src, const int32_t* dst,
                             uint32_t count, cudaStream_t stream);

KVC_CUDA_NAMESPACE_END
