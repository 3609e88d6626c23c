// See attention_pass.h.
#include "attention_pass.h"

#include <algorithm>

#include "workspace.h"

namespace kvc::compaction {

using cpu::compaction::CompactionKernels;
using cpu::compaction::packedSize;

void packRows(const CompactionKernels& k, const float* keys, const float* values, uint32_t rows, uint32_t D,
              uint32_t DV, Scratch keySlot, Scratch valueSlot, PackedRows* out) {
  out->rows = rows;
  out->D = D;
  out->DV = DV;
  out->keys = scratch<float>(keySlot, packedSize(D, rows, k.nr));
  k.packTransposed(keys, D, rows, D, out->keys);
  out->values = operandB(k, values, rows, DV, valueSlot);
}

OperandB operandB(const CompactionKernels& k, const float* b, uint32_t K, uint32_t N, Scratch slot) {
  OperandB o;
  if (N % k.nr == 0) {
    // The packed panels would be column ranges of b as it is: no copy.
    o.data = b;
    o.ld = N;
    return o;
  }
  float* packed = scratch<float>(slot, packedSize(K, N, k.nr));
  k.packRows(b, N, K, N, packed);
  o.data = packed;
  return o;
}

void gemmB(const CompactionKernels& k, uint32_t M, uint32_t N, uint32_t K, const float* a, uint32_t lda,
           const OperandB& b, float* c, uint32_t ldc) {
  if (b.ld) {
    k.gemmRowMajor(M, N, K, a, lda, b.data, b.ld, c, ldc, false);
  } else {
    k.gemm(M, N, K, a, lda, b.data, c, ldc, false);
  }
}

void attend(const CompactionKernels& k, Parallel& par, const AttendArgs& a) {
  const uint32_t rows = a.rows->rows, D = a.rows->D, DV = a.rows->DV;
  const uint32_t blocks = (a.nq + kQueryBlock - 1) / kQueryBlock;
  const uint32_t participants = par.participants();
  // Per participant: a block of exps (unless the caller keeps them all), row scales, and
  // column accumulators in f32 (summed into f64 at the end).
  const bool stat = a.columnStat != ColumnStat::kNone;
  // The row stride of a block of exps is padded by one cache line when it would be a
  // multiple of 4 KiB: the second GEMM reads 12 rows of the block at once, and rows 4 KiB
  // apart all map to the same L1 sets (12 lines in a 12-way set, with the B panel on top).
  const uint32_t ld = a.exps ? rows : (rows + 15) / 16 * 16 + ((rows + 15) / 16 * 16 % 1024 == 0 ? 16 : 0);
  const size_t blockFloats = static_cast<size_t>(kQueryBlock) * ld;
  const size_t colFloats = (static_cast<size_t>(rows) + 15) / 16 * 16;
  float* blockScratch = a.exps ? nullptr : scratch<float>(Scratch::kAttendBlocks, blockFloats * participants);
  float* colScratch = stat ? scratch<float>(Scratch::kAttendColumns, colFloats * participants) : nullptr;
  if (stat) std::fill(colScratch, colScratch + colFloats * participants, 0.0f);
  par.forEach(blocks, [&](uint32_t block, uint32_t p) {
    const uint32_t i0 = block * kQueryBlock, m = std::min(kQueryBlock, a.nq - i0);
    float* e = a.exps ? a.exps + static_cast<size_t>(i0) * rows : blockScratch + p * blockFloats;
    float* acc = stat ? colScratch + p * colFloats : nullptr;
    k.gemm(m, rows, D, a.queries + static_cast<size_t>(i0) * D, D, a.rows->keys, e, ld, false);
    k.softmaxRows(e, ld, m, rows, a.bias, a.rowMax + i0, a.rowSum + i0);
    float* y = a.out + static_cast<size_t>(i0) * DV;
    gemmB(k, m, DV, rows, e, ld, a.rows->values, y, DV);
    float inv[kQueryBlock];
    for (uint32_t r = 0; r < m; ++r) {
      const float z = a.rowSum[i0 + r];
      inv[r] = z > 0.0f ? 1.0f / z : 0.0f;
      for (uint32_t d = 0; d < DV; ++d) y[static_cast<size_t>(r) * DV + d] *= inv[r];
    }
    if (a.columnStat == ColumnStat::kExpSquares) std::fill(inv, inv + m, 1.0f);
    if (a.columnStat == ColumnStat::kAttention) {
      for (uint32_t r = 0; r < m; ++r) {
        const float* er = e + static_cast<size_t>(r) * ld;
        for (uint32_t j = 0; j < rows; ++j) acc[j] += er[j] * inv[r];
      }
    } else if (stat) {
      k.accumulateColumnSquares(e, ld, m, rows, inv, acc);
    }
  });
  if (stat)
    for (uint32_t p = 0; p < participants; ++p)
      for (uint32_t j = 0; j < rows; ++j) a.colAcc[j] += colScratch[p * colFloats + j];
}

}  // namespace kvc::compaction
