// Plain views the kernels see: pointers, strides and sizes, no ownership, no N-API, no
// CUDA types. The same structs feed the CPU kernels (cpp/cpu) and the CUDA launchers
// (cuda/); pointers are host pointers for the CPU backend and device pointers for CUDA.
#pragma once
#include <cstdint>

#include "kvc/formats.h"

namespace kvc {

// The block pool: block b starts at base + b * layout.blockBytes; with key summaries, its
// summary entry at summaries + b * layout.summaryBytes (kvc/key_summary.h).
struct PoolView {
  uint8_t* base = nullptr;
  BlockLayout layout;
  uint8_t* summaries = nullptr;
};

// How rows are encoded: shared by append, attention, read and gather.
struct RowCodec {
  Storage keyStorage = Storage::kF16;
  Storage valueStorage = Storage::kF16;
  uint32_t headDim = 0;
  uint32_t groupSize = 0;  // quantization group along headDim (divides headDim)
  // Floats per value row when it differs from headDim (low-rank values of another rank than
  // the keys; read by append and readRows of both backends and CUDA attention), else 0.
  uint32_t valueDim = 0;
  // Hadamard rotation (normalized Walsh-Hadamard with sign flips) of keys / values:
  // rotateSigns is float[headDim] of +-1, nullptr when not rotated.
  const float* keySigns = nullptr;
  const float* valueSigns = nullptr;
};

// One stream (sequence x layer x kv head) as the kernels see it.
struct StreamView {
  const int32_t* blockTable = nullptr;  // [ceil(length / blockSize)] block ids
  int32_t length = 0;                   // rows
};

// append: T new rows for each of `streamCount` streams (the kv heads of one layer of one
// sequence). Row t of stream s is written at row index startRow[s] + t of that stream,
// i.e. block blockTable[(startRow + t) / blockSize], slot (startRow + t) % blockSize.
// The block tables already hold every block the rows need (the core allocates first).
struct AppendParams {
  PoolView pool;
  RowCodec codec;
  uint32_t streamCount = 0;
  uint32_t tokens = 0;                 // T
  const int32_t* const* blockTables = nullptr;  // [streamCount] -> block ids
  const int32_t* startRow = nullptr;   // [streamCount]
  InputType inputType = InputType::kF32;
  const void* keys = nullptr;          // [T, streamCount, headDim] f32 or f16
  const void* values = nullptr;        // [T, streamCount, headDim] f32 or f16
  const int32_t* positions = nullptr;  // [T]
  const float* beta = nullptr;         // [T, streamCount] or nullptr for 0
};

// attention: every stream s serves `groupSize` query heads (GQA) and `tq` queries.
// queries and out are [tq][groupSize][headDim] per stream, addressed through strides so
// that a whole [sequences, tq, queryHeads, headDim] tensor maps onto the streams without
// copies: element (s, t, g, d) is at base + s * streamStride + t * tokenStride + g * headDim + d.
struct AttentionStream {
  StreamView kv;
  // [tq] causal cutoff, row visible iff pos <= it; nullptr = the positions of the last tq
  // rows of the stream (the usual case: queries belong to the rows just appended).
  const int32_t* queryPositions = nullptr;
  // Row index of query 0 (RoPE positions re-indexed by rank); -1 = length - tq, the usual case.
  int32_t firstQueryRow = -1;
  const float* queries = nullptr;           // first element of (s, 0, 0, 0)
  float* out = nullptr;                     // first element of (s, 0, 0, 0)
  float* lse = nullptr;                     // (s, t, g) at lse + t * lseTokenStride + g, or nullptr
  float* scores = nullptr;                  // [length] attention mass accumulator, or nullptr
  // Low-rank keys lifted before RoPE (AttentionParams::liftDim > 0): the stream's key basis,
  // [liftDim][codec.headDim] row-major (B_k of kvc/lowrank_ops.h); nullptr otherwise.
  const float* keyBasis = nullptr;
};

// RoPE applied inside attention (keys stored before RoPE; kvc/rope.h has the math). dims == 0:
// keys were stored after RoPE and nothing is rotated. The core fills the spec; a backend that
// implements RoPE fills the tables it built for it (cos / sin per level, see kvc/rope.h).
struct RopeSpec {
  double theta = 0.0;
  uint32_t dims = 0;       // rotated channels: the first dims of each head (even)
  uint32_t style = 0;      // 0 interleaved pairs (2i, 2i+1); 1 halves (i, i + dims/2)
  bool byRank = false;     // positions re-indexed by rank in the stream instead of as stored
};

struct RopeView {
  RopeSpec spec;
  const float* cosTable = nullptr;  // [kRopeLevels][kRopeLevelSize][dims], see kvc/rope.h
  const float* sinTable = nullptr;  // same shape; signed per channel (see kvc/rope.h)
};

struct AttentionParams {
  PoolView pool;
  RowCodec codec;
  uint32_t streamCount = 0;
  const AttentionStream* streams = nullptr;  // [streamCount]
  uint32_t queriesPerHead = 1;   // GQA ratio: query heads per kv head
  uint32_t tq = 1;
  uint64_t tokenStride = 0;      // floats between query tokens (queryHeads * headDim)
  uint64_t lseTokenStride = 0;   // floats between query tokens in lse (queryHeads)
  float scale = 1.0f;            // usually 1 / sqrt(headDim)
  // precision 'fast': int8 / int4 keys may be scored with integer dot products against the
  // query quantized to int8 per group (docs/fast-precision.md). A backend without such a
  // kernel computes exactly (the CUDA backend does).
  bool fast = false;
  RopeView rope;                 // rope.spec.dims == 0: keys already hold RoPE
  // > 0 (Backend::attendsLiftedKeys): key rows hold codec.headDim coefficients of pre-RoPE keys,
  // lifted per row to liftDim floats (k = B_k c, AttentionStream::keyBasis) and rotated at the
  // row's position before the dot; queries are liftDim wide, outputs stay valueWidth wide.
  uint32_t liftDim = 0;
};

// Key summaries (sparse decode): recompute or extend the summary of one block from its stored
// keys. Rows [begin, end) of the block are folded in; begin == 0 starts from an empty summary
// (the block's rows before `begin` are already in it otherwise).
struct SummaryJob {
  int32_t block = 0;
  uint32_t begin = 0;
  uint32_t end = 0;
};

// Upper bounds of the attention logits per block of a stream, from the key summaries:
// bounds[b] = max over the stream's tq * queriesPerHead queries q of
//   scale * sum_d max(q_d lo_d, q_d hi_d) + the largest beta of the block's summarized rows,
// q in the rotated space when keys are rotated (the backend rotates, as attention does).
// A block whose summary holds a NaN bound gets +Inf (always worth reading).
struct BoundsStream {
  StreamView kv;
  const float* queries = nullptr;  // first element of (s, 0, 0, 0), addressed like AttentionStream
  float* bounds = nullptr;         // [ceil(length / blockSize)] host memory
};

struct BlockBoundsParams {
  PoolView pool;
  RowCodec codec;
  uint32_t streamCount = 0;
  const BoundsStream* streams = nullptr;  // [streamCount]
  uint32_t queriesPerHead = 1;
  uint32_t tq = 1;
  uint64_t tokenStride = 0;  // floats between query tokens
  float scale = 1.0f;
};

}  // namespace kvc
