// See attention_pass.h.
#include "attention_pass.h"

#include <algorithm>

namespace kvc::compaction {

using cpu::compaction::CompactionKernels;
using cpu::compaction::packedSize;

void packRows(const CompactionKernels& k, const float* keys, const float* values, uint32_t rows, uint32_t D,
              PackedRows* out) {
  out->rows = rows;
  out->D = D;
  out->keys.resize(packedSize(D, rows, k.nr));
  out->values.resize(packedSize(rows, D, k.nr));
  k.packTransposed(keys, D, rows, D, out->keys.data());
  k.packRows(values, D, rows, D, out->values.data());
}

void attend(const CompactionKernels& k, Parallel& par, const AttendArgs& a) {
  const uint32_t rows = a.rows->rows, D = a.rows->D;
  const uint32_t blocks = (a.nq + kQueryBlock - 1) / kQueryBlock;
  const uint32_t participants = par.participants();
  // Per participant: a block of exps (unless the caller keeps them all), row scales, and
  // column accumulators in f32 (summed into f64 at the end).
  const bool stat = a.columnStat != ColumnStat::kNone;
  std::vector<std::vector<float>> scratch(participants), colAcc(participants);
  for (uint32_t p = 0; p < participants; ++p) {
    if (!a.exps) scratch[p].resize(static_cast<size_t>(kQueryBlock) * rows);
    if (stat) colAcc[p].assign(rows, 0.0f);
  }
  par.forEach(blocks, [&](uint32_t block, uint32_t p) {
    const uint32_t i0 = block * kQueryBlock, m = std::min(kQueryBlock, a.nq - i0);
    float* e = a.exps ? a.exps + static_cast<size_t>(i0) * rows : scratch[p].data();
    k.gemm(m, rows, D, a.queries + static_cast<size_t>(i0) * D, D, a.rows->keys.data(), e, rows, false);
    k.softmaxRows(e, rows, m, rows, a.bias, a.rowMax + i0, a.rowSum + i0);
    float* y = a.out + static_cast<size_t>(i0) * D;
    k.gemm(m, D, rows, e, rows, a.rows->values.data(), y, D, false);
    float inv[kQueryBlock];
    for (uint32_t r = 0; r < m; ++r) {
      const float z = a.rowSum[i0 + r];
      inv[r] = z > 0.0f ? 1.0f / z : 0.0f;
      for (uint32_t d = 0; d < D; ++d) y[static_cast<size_t>(r) * D + d] *= inv[r];
    }
    if (a.columnStat == ColumnStat::kExpSquares) std::fill(inv, inv + m, 1.0f);
    if (a.columnStat == ColumnStat::kAttention) {
      float* acc = colAcc[p].data();
      for (uint32_t r = 0; r < m; ++r) {
        const float* er = e + static_cast<size_t>(r) * rows;
        for (uint32_t j = 0; j < rows; ++j) acc[j] += er[j] * inv[r];
      }
    } else if (stat) {
      k.accumulateColumnSquares(e, rows, m, rows, inv, colAcc[p].data());
    }
  });
  if (stat)
    for (uint32_t p = 0; p < participants; ++p)
      for (uint32_t j = 0; j < rows; ++j) a.colAcc[j] += colAcc[p][j];
}

}  // namespace kvc::compaction
