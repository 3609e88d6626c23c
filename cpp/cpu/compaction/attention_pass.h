// Attention of many queries over one set of rows, blocked over queries: scores (GEMM),
// softmax statistics, the normalized output (GEMM), and optionally per-row statistics or the
// full exp matrix. Used for the original stream, the compacted rows and held-out queries.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#include "workspace.h"

namespace kvc::compaction {

// A row-major B operand b [K, N] of a product: packed (ld 0, for gemm) or, when N is a
// multiple of the kernels' panel width, used in place (ld = its row stride, for
// gemmRowMajor; same results bit for bit, no packing pass).
struct OperandB {
  const float* data = nullptr;
  uint32_t ld = 0;
};
// b [K, N] (row stride N) as a B operand; a packed copy goes to this thread's scratch `slot`.
OperandB operandB(const cpu::compaction::CompactionKernels& k, const float* b, uint32_t K, uint32_t N, Scratch slot);
// c [M, N] (row stride ldc) = a [M, K] (row stride lda) · b.
void gemmB(const cpu::compaction::CompactionKernels& k, uint32_t M, uint32_t N, uint32_t K, const float* a, uint32_t lda,
           const OperandB& b, float* c, uint32_t ldc);

// Keys packed as the B operand of S = Q Kᵀ (K = D, N = rows) and values as the B operand of
// Y = E V (K = rows, N = DV, the value width).
// The buffers are this thread's scratch slots given to packRows.
struct PackedRows {
  uint32_t rows = 0, D = 0, DV = 0;
  float* keys = nullptr;
  OperandB values;
};
// keys [rows, D], values [rows, DV] row-major.
void packRows(const cpu::compaction::CompactionKernels& k, const float* keys, const float* values, uint32_t rows,
              uint32_t D, uint32_t DV, Scratch keySlot, Scratch valueSlot, PackedRows* out);

enum class ColumnStat {
  kNone,
  kAttentionSquares,  // colAcc[j] += Σ_i A_ij²  (highest-attention score)
  kExpSquares,        // colAcc[j] += Σ_i E_ij²  (OMP column norms)
  kAttention,         // colAcc[j] += Σ_i A_ij   (accumulated attention mass, H2O)
};

struct AttendArgs {
  const float* queries = nullptr;  // [nq, D], already scaled by 1/√D
  uint32_t nq = 0;
  const PackedRows* rows = nullptr;
  const float* bias = nullptr;     // [rows] or nullptr
  float* rowMax = nullptr;         // [nq] max logit per query
  float* rowSum = nullptr;         // [nq] Σ exp(logit − rowMax)
  float* out = nullptr;            // [nq, DV] normalized attention output (0 for an empty row)
  float* exps = nullptr;           // optional [nq, rows]: E = exp(S − rowMax), kept for the caller
  ColumnStat columnStat = ColumnStat::kNone;
  double* colAcc = nullptr;        // [rows], added to (not cleared)
};

void attend(const cpu::compaction::CompactionKernels& k, Parallel& par, const AttendArgs& a);

// Query rows per task: a multiple of every table's micro-kernel height (12, 6, 4).
constexpr uint32_t kQueryBlock = 48;

}  // namespace kvc::compaction
