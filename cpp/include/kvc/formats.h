// Storage formats and the block layout, defined once for the core, the CPU kernels, the
// CUDA kernels and serialization (ARCHITECTURE §3). A change here changes the export
// format: bump kFormatVersion in cpp/core/serialize.h with it.
#pragma once
#include <cstdint>

#include "kvc/half.h"

// Format arithmetic is constexpr so that sizes can be static_asserted below.
#define KVC_HDC KVC_HD constexpr

namespace kvc {

enum class Storage : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kInt8 = 3, kInt4 = 4 };
constexpr int kStorageCount = 5;

KVC_HDC const char* storageName(Storage s) {
  switch (s) {
    case Storage::kF32: return "f32";
    case Storage::kF16: return "f16";
    case Storage::kBF16: return "bf16";
    case Storage::kInt8: return "int8";
    case Storage::kInt4: return "int4";
  }
  return "?";
}

KVC_HDC bool isQuantized(Storage s) { return s == Storage::kInt8 || s == Storage::kInt4; }

// Input element types accepted by append (the engine's K/V tensors).
enum class InputType : uint8_t { kF32 = 0, kF16 = 1 };

// Row layouts (one token of one kv head, headDim = D, groupSize = G, groups = D / G):
//   f32   float32[D]
//   f16   binary16[D]
//   bf16  bfloat16[D]
//   int8  int8[D] | f16 scale[groups]                 x = q * scale, scale = absmax / 127
//   int4  uint8[D/2] | (f16 scale, f16 min)[groups]   x = q * scale + min, q in [0, 15];
//         within a group, byte j holds element j in its low nibble and element j + G/2
//         in its high nibble, so a SIMD load of G/2 bytes unpacks into two in-order halves.
// Every row is padded to a multiple of 4 bytes so that scales stay aligned and CUDA
// kernels can use 4-byte loads.
KVC_HDC uint32_t alignUp(uint32_t x, uint32_t a) { return (x + a - 1) / a * a; }

KVC_HDC uint32_t rowDataBytes(Storage s, uint32_t headDim) {
  switch (s) {
    case Storage::kF32: return 4 * headDim;
    case Storage::kF16:
    case Storage::kBF16: return 2 * headDim;
    case Storage::kInt8: return headDim;
    case Storage::kInt4: return headDim / 2;
  }
  return 0;
}

KVC_HDC uint32_t rowScaleBytes(Storage s, uint32_t headDim, uint32_t groupSize) {
  const uint32_t groups = groupSize ? headDim / groupSize : 0;
  switch (s) {
    case Storage::kInt8: return 2 * groups;
    case Storage::kInt4: return 4 * groups;
    default: return 0;
  }
}

KVC_HDC uint32_t rowBytes(Storage s, uint32_t headDim, uint32_t groupSize) {
  return alignUp(rowDataBytes(s, headDim) + rowScaleBytes(s, headDim, groupSize), 4);
}

// One block holds blockSize rows of one stream, as four arrays (structure of arrays,
// so attention streams keys and values with unit stride):
//   keys       [blockSize][keyRowBytes]
//   values     [blockSize][valueRowBytes]       starts 64-byte aligned
//   beta       float32[blockSize]                logit bias, 0 unless compacted
//   positions  int32[blockSize]                  original token positions
// Blocks are 64-byte aligned within the pool (blockBytes is a multiple of 64).
// With key summaries (sparse decode, ARCHITECTURE §9) every block id also owns one entry of
// summaryBytes in a side array next to the pool (kvc/key_summary.h):
//   maxBeta    float32, then 12 bytes of padding  the largest beta of the summarized rows
//   lo, hi     bfloat16[2][headDim]               per channel the minimum (rounded down) and
//              maximum (rounded up) of the block's keys as stored (dequantized, rotated), so
//              q·k of any row is at most sum_d max(q_d lo_d, q_d hi_d)
// The entries sit together, not at the end of their blocks, so bounding a stream's blocks reads
// one dense array instead of one cache line per 17 KB of pool.
struct BlockLayout {
  uint32_t blockSize = 0;
  uint32_t keyRowBytes = 0;
  uint32_t valueRowBytes = 0;
  uint32_t valuesOffset = 0;
  uint32_t betaOffset = 0;
  uint32_t positionsOffset = 0;
  uint32_t blockBytes = 0;
  uint32_t summaryBytes = 0;  // bytes of a block's key-summary entry; 0: no key summaries
};

// Pool bytes one block costs, its key-summary entry included.
KVC_HDC uint64_t blockFootprint(const BlockLayout& l) { return uint64_t{l.blockBytes} + l.summaryBytes; }

// A 16-byte head (maxBeta) and bf16 lo[headDim], hi[headDim]: 4 bytes per channel (bf16 keeps
// f32's range, so a bound never overflows to Inf the way an f16 one could).
KVC_HDC uint32_t keySummaryBytes(uint32_t headDim) { return alignUp(16 + 4 * headDim, 16); }

KVC_HDC BlockLayout makeBlockLayout(uint32_t blockSize, uint32_t keyRowBytes, uint32_t valueRowBytes,
                                    uint32_t summaryBytes = 0) {
  BlockLayout l;
  l.blockSize = blockSize;
  l.keyRowBytes = keyRowBytes;
  l.valueRowBytes = valueRowBytes;
  l.valuesOffset = alignUp(blockSize * keyRowBytes, 64);
  l.betaOffset = alignUp(l.valuesOffset + blockSize * valueRowBytes, 64);
  l.positionsOffset = l.betaOffset + 4 * blockSize;
  const uint32_t end = l.positionsOffset + 4 * blockSize;
  l.summaryBytes = summaryBytes;
  l.blockBytes = alignUp(end, 64);
  return l;
}

// Sizes of the formats for the shapes the tests and benchmarks use; a change of layout
// that is not deliberate fails to compile.
static_assert(rowBytes(Storage::kF16, 128, 32) == 256, "f16 row");
static_assert(rowBytes(Storage::kInt8, 128, 32) == 136, "int8 row: 128 + 4 f16 scales");
static_assert(rowBytes(Storage::kInt4, 128, 32) == 80, "int4 row: 64 + 4 (scale, min) pairs");
static_assert(rowBytes(Storage::kInt4, 8, 8) == 8, "int4 row, head_dim 8: 4 + 4");
static_assert(makeBlockLayout(32, 256, 256).blockBytes == 16640, "f16 block, D=128, 32 rows");
static_assert(blockFootprint(makeBlockLayout(32, 256, 256, keySummaryBytes(128))) == 16640 + 528,
              "f16 block with its key-summary entry, D=128, 32 rows");

}  // namespace kvc
