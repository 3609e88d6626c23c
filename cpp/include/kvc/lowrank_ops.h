// Numerics of low-rank storage (ARCHITECTURE §9, "per-stream side data"): projection of rows
// onto a stream's basis, the lift back, the basis fit, and exact attention over the
// full-precision rows a stream holds while it calibrates. A backend provides them as a table of
// plain functions on host memory; the core (cpp/core/lowrank.cpp) decides when they run.
#pragma once
#include <cstdint>

#include "kvc/status.h"
#include "kvc/views.h"

namespace kvc {

// Exact f32 attention over the rows a calibrating stream still holds at full precision
// (a few hundred at most), with the same contract as the block attention: GQA group of
// `queriesPerHead` query heads, causal cutoff by position, log-sum-exp and attention mass.
struct DenseAttentionArgs {
  uint32_t rows = 0;
  uint32_t headDim = 0;                // D
  uint32_t queriesPerHead = 1;         // g
  uint32_t tq = 1;
  const float* keys = nullptr;         // [rows][D]
  const float* values = nullptr;       // [rows][D]
  const int32_t* positions = nullptr;  // [rows]
  const int32_t* cutoff = nullptr;     // [tq] row visible iff position <= cutoff[t]
  const float* queries = nullptr;      // (t, j, d) at queries + t * tokenStride + j * D + d
  float* out = nullptr;                // same addressing as queries
  uint64_t tokenStride = 0;
  float* lse = nullptr;                // (t, j) at lse + t * lseTokenStride + j, or nullptr
  uint64_t lseTokenStride = 0;
  float* scores = nullptr;             // [rows] attention mass accumulator, or nullptr
  float scale = 1.0f;
};

// Logits of M query vectors over n low-rank keys stored before RoPE (cache option `rope`).
// R(p) B c has no r-dimensional form for all positions p (RoPE is not diagonal in the basis),
// and any exact form costs D x r per row (q . R(p) B c is a bilinear form of rank r in c and
// the D cos / sin of p): the cheapest is to lift each row once, k = B c, and share it by all
// M query vectors. Rows run in tiles: lift (one small GEMM into L1 scratch), rotate at each
// row's position, dot with the M rotated queries. Channels are in "half" order (pairs
// (i, i + dims/2)): an interleaved model is served by permuting the basis columns, the
// queries and the tables once (a dot product does not depend on the channel order).
constexpr uint32_t kRopeLogitsTileRows = 16;
struct RopeLogitsArgs {
  uint32_t rows = 0;
  uint32_t headDim = 0;              // D
  uint32_t rank = 0;                 // r
  const float* coef = nullptr;       // [rows][coefStride], r used
  uint64_t coefStride = 0;
  const float* basisT = nullptr;     // [r][D]: the key basis transposed, channels in half order
  const uint32_t* positions = nullptr;  // [rows] RoPE position of each row
  RopeView rope;                     // style 1 (half) tables, dims <= D
  const float* queries = nullptr;    // [M][D], rotated at their own positions, half order
  uint32_t M = 0;
  float scale = 1.0f;
  float* logits = nullptr;           // logits[m * logitStride + i]
  uint64_t logitStride = 0;
  float* scratch = nullptr;          // ropeLogitsScratchFloats(D, dims, M) floats
};

inline uint64_t ropeLogitsScratchFloats(uint32_t D, uint32_t dims, uint32_t M) {
  return static_cast<uint64_t>(kRopeLogitsTileRows) * D + 3ull * dims + static_cast<uint64_t>(M) * D;
}

struct LowRankKernels {
  const char* name = nullptr;
  // out[i][j] = scale * sum_d in[i][d] * basis[d][j]: n rows of D floats (inStride floats
  // apart) onto r coefficients (outStride floats apart). basis is [D][r], orthonormal columns.
  void (*project)(const float* in, uint64_t inStride, uint32_t n, uint32_t D, const float* basis, uint32_t r,
                  float scale, float* out, uint64_t outStride) = nullptr;
  // out[i][d] = sum_j coef[i][j] * basis[d][j]: the lift of n coefficient rows back to D.
  void (*lift)(const float* coef, uint64_t coefStride, uint32_t n, uint32_t r, const float* basis, uint32_t D,
               float* out, uint64_t outStride) = nullptr;
  // The r leading eigenvectors of the second-moment matrix sum_i x_i x_i^T of n rows [n][D]
  // as the columns of basis [D][r] (eigenvalues descending into eigenvalues[r] when given).
  Status (*fitBasis)(const float* rows, uint32_t n, uint32_t D, uint32_t r, float* basis, double* eigenvalues) = nullptr;
  void (*denseAttention)(const DenseAttentionArgs& a) = nullptr;
  void (*ropeLogits)(const RopeLogitsArgs& a) = nullptr;
  // out[m * outStride + i] = scale * rows[i] . queries[m] for n rows of L floats and M queries
  // ([M][L]): the logits of coefficient rows against projected queries.
  void (*rowDots)(const float* rows, uint64_t rowStride, uint32_t n, uint32_t L, const float* queries, uint32_t M, float scale,
                  float* out, uint64_t outStride) = nullptr;
  // out[m][j] = sum_i w[m * wStride + i] * values[i][j]: M weight rows over n value rows [n][RV].
  void (*weightedSum)(const float* w, uint64_t wStride, uint32_t M, uint32_t n, const float* values, uint32_t RV, float* out) = nullptr;
  // x[i] = exp(x[i] - shift) for i < n (exactly 0 for -inf); returns the sum.
  double (*expShift)(float* x, uint32_t n, float shift) = nullptr;
};

// The host implementation (cpp/cpu/lowrank/): the CPU backend's table, and the one the core
// uses with a device backend that has none of its own. Every LowRankKernels function works on
// host memory (bases, queries, outputs and rows all live on the host: the device backend
// appends and attends over the coefficient rows, which it holds).
const LowRankKernels& hostLowRankKernels();

}  // namespace kvc
