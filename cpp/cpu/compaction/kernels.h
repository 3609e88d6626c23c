// The numerical kernels of Attention Matching compaction (ARCHITECTURE.md §4.5) on plain
// row-major arrays: packed-panel GEMM, softmax row statistics, column statistics, and the f64
// Cholesky / NNLS solvers. One table per instruction set, picked at run time (cpuid), like
// kernel_table.h. No allocation, no threads, no status: compaction.cpp orchestrates.
#pragma once
#include <cstdint>

namespace kvc::cpu::compaction {

// Packed B operand of gemm(): ceil(N / nr) panels; panel p holds columns [p·nr, p·nr + nr)
// of the K × N matrix B as K rows of nr contiguous floats (row k at p·K·nr + k·nr), zero
// past column N. packedSize() floats.
inline uint64_t packedSize(uint32_t K, uint32_t N, uint32_t nr) {
  return static_cast<uint64_t>((N + nr - 1) / nr) * nr * K;
}

struct CompactionKernels {
  const char* name = nullptr;
  uint32_t nr = 1;  // panel width of packed B operands
  uint32_t mr = 1;  // rows per micro-kernel call (row blocks that are multiples of it run fastest)

  // B given row-major: b [K, N] with row stride ldb -> out [packedSize(K, N, nr)].
  void (*packRows)(const float* b, uint32_t ldb, uint32_t K, uint32_t N, float* out) = nullptr;
  // B given as its transpose: bt [N, K] with row stride ldbt (B = btᵀ) -> out.
  void (*packTransposed)(const float* bt, uint32_t ldbt, uint32_t N, uint32_t K, float* out) = nullptr;
  // c [M, N] (row stride ldc) = (accumulate ? c : 0) + a [M, K] (row stride lda) · B (packed).
  void (*gemm)(uint32_t M, uint32_t N, uint32_t K, const float* a, uint32_t lda, const float* packedB, float* c,
               uint32_t ldc, bool accumulate) = nullptr;
  // The same product with B used in place, row-major b [K, N] (row stride ldb), when N is a
  // multiple of nr (a packed B's panels are then just column ranges of b): no packing pass,
  // and the same results as gemm() on packRows(b) bit for bit.
  void (*gemmRowMajor)(uint32_t M, uint32_t N, uint32_t K, const float* a, uint32_t lda, const float* b, uint32_t ldb,
                       float* c, uint32_t ldc, bool accumulate) = nullptr;

  // For each of `rows` rows of s [rows, cols] (row stride ld): s += bias (bias [cols] or
  // nullptr), rowMax[r] = max, s = exp(s − rowMax[r]), rowSum[r] = Σ s. Rows of −inf stay 0
  // with rowMax −inf and rowSum 0.
  void (*softmaxRows)(float* s, uint32_t ld, uint32_t rows, uint32_t cols, const float* bias, float* rowMax,
                      float* rowSum) = nullptr;
  // s [rows, cols] (row stride ld) = exp(s + rowOffset[r] + colOffset[c]); either offset
  // array ([rows] / [cols]) may be nullptr. Underflow gives exactly 0.
  void (*expAffine)(float* s, uint32_t ld, uint32_t rows, uint32_t cols, const float* rowOffset,
                    const float* colOffset) = nullptr;
  // colAcc [cols] += Σ_r (s[r, j] · rowScale[r])²  (rowScale [rows]).
  void (*accumulateColumnSquares)(const float* s, uint32_t ld, uint32_t rows, uint32_t cols, const float* rowScale,
                                  float* colAcc) = nullptr;
  // y [cols] = aᵀ x: y[j] = Σ_r a[r, j] · x[r]  (a [rows, cols] with row stride lda, x [rows]).
  void (*gemvTransposed)(const float* a, uint32_t lda, uint32_t rows, uint32_t cols, const float* x,
                         float* y) = nullptr;

  // In-place lower Cholesky factor of the symmetric positive definite a [n, n] (row stride
  // lda; only the lower triangle is read and written). False when a pivot is not positive
  // or not finite (the caller retries with a larger ridge).
  bool (*cholesky)(double* a, uint32_t n, uint32_t lda) = nullptr;
  // Solves (L Lᵀ) x = b for nrhs right-hand sides in place: b [n, nrhs] (row stride ldb).
  void (*choleskySolve)(const double* l, uint32_t n, uint32_t lda, double* b, uint32_t nrhs, uint32_t ldb) = nullptr;
  // Projected coordinate descent on min ½ wᵀG w − hᵀw subject to lo ≤ w ≤ hi, starting from
  // w [n] (clamped first): g [n, n] symmetric with both triangles stored (row stride ldg),
  // h [n], scratch [n]. Stops after `sweeps` sweeps or when no coordinate moves by more than
  // 1e-7·(1+|w|). Returns the number of sweeps run.
  uint32_t (*nnlsCoordinateDescent)(const double* g, uint32_t n, uint32_t ldg, const double* h, double lo, double hi,
                                    uint32_t sweeps, double* w, double* scratch) = nullptr;
};

// The fastest table this CPU runs (KVCOMPACT_SIMD=portable|avx2 caps it, see cpu_features.cpp).
const CompactionKernels& compactionKernels();
// A specific table by name ("portable", "avx2", "avx512"); nullptr when this CPU or this
// build lacks it. For tests and benchmarks that compare the paths.
const CompactionKernels* compactionKernelsFor(const char* isa);

const CompactionKernels& portableCompactionKernels();
const CompactionKernels* avx2CompactionKernels();
const CompactionKernels* avx512CompactionKernels();

}  // namespace kvc::cpu::compaction
