// The CPU kernels one instruction set provides, as plain function pointers, so that the
// backend picks an implementation at run time (cpuid) and a prebuilt binary runs on any
// x86-64. Each kernels_<isa>.cpp fills one table.
#pragma once
#include <cstdint>

#include "kvc/rope.h"
#include "kvc/views.h"

namespace kvc::cpu {

// logitsOut: nullptr, or [M][stream length] receiving every masked logit (-inf when masked),
// from which the backend derives attention mass once the final log-sum-exp is known.
using AttentionRangeFn = void (*)(const AttentionParams& p, const AttentionStream& s, uint32_t blockBegin,
                                  uint32_t blockEnd, const int32_t* queryPositions, float* scratch, float* m, float* l,
                                  float* acc, float* logitsOut);
// scores[r] += sum_m exp(logits[m][r] - lse[m]) over M rows of logits with the given stride.
using AccumulateMassFn = void (*)(const float* logits, uint64_t stride, const float* lse, uint32_t M, uint32_t rows,
                                  float* scores);
// Writes n rows of f32 input (already rotated when the codec rotates) into encoded rows.
using EncodeRowsFn = void (*)(const float* in, uint32_t n, uint32_t headDim, uint32_t groupSize, uint8_t* out,
                              uint32_t outStride);
// Decodes n encoded rows (stride bytes apart) into f32 [n][headDim] (no rotation).
using DecodeRowsFn = void (*)(const uint8_t* rows, uint32_t n, uint32_t stride, uint32_t headDim, uint32_t groupSize,
                              float* out);
// Converts n f16 values to f32.
using HalfToFloatFn = void (*)(const uint16_t* in, float* out, uint64_t n);

struct KernelTable {
  const char* name = nullptr;
  uint32_t width = 1;  // floats per vector: head_dim and groups must be multiples of it
  AttentionRangeFn attention[kStorageCount][kStorageCount] = {};  // [key storage][value storage]
  // precision 'fast' (fast_keys.inl): int8 / int4 keys with a fused group size; else nullptr.
  AttentionRangeFn attentionFast[kStorageCount][kStorageCount] = {};
  EncodeRowsFn encode[kStorageCount] = {};
  DecodeRowsFn decode[kStorageCount] = {};
  HalfToFloatFn halfToFloat = nullptr;
  AccumulateMassFn accumulateMass = nullptr;

  // Whether this table's vector width fits the codec (else a narrower table is used).
  bool supports(const RowCodec& c) const {
    // Value rows have their own width when it differs (low-rank values, a rope stage's
    // lifted keys): both must be whole vectors, or the decoders write past a row's end.
    const uint32_t valueDim = c.valueDim ? c.valueDim : c.headDim;
    if (c.headDim % width != 0 || valueDim % width != 0) return false;
    auto fits = [&](Storage s) {
      if (s == Storage::kInt8) return c.groupSize % width == 0;
      if (s == Storage::kInt4) return c.groupSize % (2 * width) == 0;
      return true;
    };
    return fits(c.keyStorage) && fits(c.valueStorage);
  }
};

// Per-block scratch of the attention kernels: rows of logits and tiles of group parameters
// are padded to a multiple of this many rows (the widest vector), so loops over them run
// whole vectors.
constexpr uint32_t kScratchRowAlign = 16;

// Floats of scratch one decode call of an AttentionRangeFn needs (callers size scratch with
// attentionCallScratchFloats, below, which covers prefill too): logits [M][blockSize padded], f32 rows
// of a key and a value block (quantized formats with group sizes that have no fused
// kernel), the group parameters (scale, min) of both and the value weights of up to 8
// queries per group and row, a contiguous copy of the M query vectors, and their int8
// quantization for precision 'fast' (two int8 terms [M][D] and three floats per query and group).
inline size_t attentionScratchFloats(uint32_t M, const RowCodec& c, uint32_t blockSize) {
  const size_t padded = (blockSize + kScratchRowAlign - 1) / kScratchRowAlign * kScratchRowAlign;
  const size_t groups = c.groupSize ? c.headDim / c.groupSize : 0;
  const size_t fastQuery = static_cast<size_t>(M) * (2 * (c.headDim / 4 + 1) + 3 * groups);
  return static_cast<size_t>(M) * (padded + c.headDim) + 2ull * c.headDim * blockSize + (12 * padded + 8) * groups +
         fastQuery;
}

// Prefill (calls with at least kPrefillMinQueries query vectors, see prefill_kernel.inl)
// works on tiles of up to kPrefillTileBlocks consecutive blocks: every load and store of a
// query's accumulator and every softmax step is shared by that many more rows. Two blocks
// measured 8-10% faster than one (Tq 256, 8 kv heads x 128, blocks of 32); four and eight
// were no faster than one, their [M][tile rows] logits crowding the accumulators out of L2.
constexpr uint32_t kPrefillMinQueries = 32;
constexpr uint32_t kPrefillTileBlocks = 2;

// Floats of scratch a prefill call (prefillRange) needs: logits [M][tile rows], the
// transposed keys and the decoded rows of a tile ([tile rows][D] each), the tile's beta and
// positions, and a rescale factor per query.
inline size_t prefillScratchFloats(uint32_t M, const RowCodec& c, uint32_t blockSize) {
  const size_t tileRows = static_cast<size_t>(blockSize) * kPrefillTileBlocks;
  return static_cast<size_t>(M) * (tileRows + 1) + 2 * tileRows * c.headDim + 2 * tileRows;
}

// Scratch of one call of the kernel table's attention functions with M query vectors.
inline size_t attentionCallScratchFloats(uint32_t M, const RowCodec& c, uint32_t blockSize) {
  const size_t decode = attentionScratchFloats(M, c, blockSize);
  if (M < kPrefillMinQueries) return decode;
  const size_t prefill = prefillScratchFloats(M, c, blockSize);
  return prefill > decode ? prefill : decode;
}

const KernelTable& portableKernels();
// nullptr when the CPU (or the compiler) lacks the instructions.
const KernelTable* avx2Kernels();
const KernelTable* avx512Kernels();
// Only attentionFast filled (AVX-512 VNNI); nullptr when the compiler lacks it.
const KernelTable* avx512VnniFastKernels();

}  // namespace kvc::cpu
