// Attention Matching compaction of one stream (one layer × kv head), ARCHITECTURE.md §4.5, on
// plain dequantized f32 arrays: the CPU backend's compaction math (compact_streams.cpp feeds it
// from the pool). Picks t of the T rows, gives each kept row a new logit bias
// beta and a fitted value so that softmax(q·K_keptᵀ/√D + beta)·V_fitted ≈ softmax(q·Kᵀ/√D + b)·V
// for the reference queries. Returns a Status; never throws, never aborts.
//
//   S = Q Kᵀ/√D + b          [n, T]  (b: the rows' current bias, 0 for a fresh stream)
//   E = exp(S − rowmax(S)),  z = E·1,  A = E / z,  Y = A V
//   keep: protected rows + (t − |P|) rows chosen by `method`
//   w = argmin_{w ∈ [minWeight, maxWeight]} ‖diag(1/z) (E_F w − (z − E_P·1))‖  (F: kept unprotected
//       rows; Options::massObjective = kAbsolute drops the 1/z row weights)
//   beta_j = b_j + log w_j  (protected rows: beta_j = b_j)
//   C = argmin ‖X_F C − (Y − X_P V_P)‖² + λ‖C‖²,  X = softmax(Q K_keepᵀ/√D + beta)
//   values: C for unprotected kept rows, V for protected ones.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvc/compaction_ops.h"
#include "kvc/status.h"

namespace kvc::cpu {
class ThreadPool;
}
namespace kvc::compaction {
class Workspace;
}

namespace kvc::compaction {

// Method, Pooling, MassObjective and Options: kvc/compaction_ops.h (shared with the backends).

struct Problem {
  const float* keys = nullptr;             // [T, D] as attention uses them (after RoPE / rotation)
  const float* values = nullptr;           // [T, valueDim()]
  const float* bias = nullptr;             // [T] current logit bias, or nullptr for all zeros
  const uint8_t* protectedRows = nullptr;  // [T] nonzero: always kept, bias and value unchanged; or nullptr
  uint32_t T = 0;                          // rows of the stream
  uint32_t D = 0;                          // head dim (of keys and queries)
  uint32_t DV = 0;                         // floats per value row when it differs from D (low-rank values), else 0
  const float* queries = nullptr;          // [n, D] reference queries (unscaled; 1/√D is applied here)
  uint32_t n = 0;
  const float* heldOutQueries = nullptr;   // [nHeldOut, D] only for diagnostics, or nullptr
  uint32_t nHeldOut = 0;
  uint32_t target = 0;                     // rows to keep, protected ones included (>= 1)

  // The value fit is a least-squares problem per value dimension: its width is independent
  // of the key width.
  uint32_t valueDim() const { return DV ? DV : D; }
};

struct Result {
  std::vector<int32_t> keep;   // [t] kept row indices, ascending
  std::vector<float> beta;     // [t] new bias of each kept row (replaces b)
  std::vector<float> values;   // [t, valueDim] value of each kept row
  // Relative attention-output error ‖softmax(S_compact) V_compact − A V‖_F / ‖A V‖_F and mean
  // |exp(lse_compact − lse) − 1| over the reference queries, and the same over the held-out
  // queries (NaN when there are none).
  float outputError = 0.0f;
  float massError = 0.0f;
  float heldOutOutputError = 0.0f;
  float heldOutMassError = 0.0f;
  uint32_t ridgeRaises = 0;  // how often a factorization needed a larger ridge
  // Wall time per phase, summed over chunks.
  double secondsScores = 0;       // S, softmax statistics, A V
  double secondsSelect = 0;       // choosing rows (OMP includes its intermediate refits)
  double secondsNnls = 0;         // E_F, its Gram matrix, the NNLS fit of w
  double secondsValues = 0;       // X, its Gram matrix, the value solve
  double secondsDiagnostics = 0;  // compacted attention on reference and held-out queries
  Status status;
};

// Checks pointers and sizes; names the argument and what it expected.
Status validate(const Problem& problem, const Options& options);

// Scratch memory comes from `workspace` (the backend's, kept between calls); nullptr: a
// workspace of this call only, freed on return.

// One stream. pool may be nullptr (single-threaded); otherwise its threads split the row
// blocks of this stream. Must not be called from inside a task of the same pool.
Status compact(const Problem& problem, const Options& options, cpu::ThreadPool* pool, Result* result,
               Workspace* workspace = nullptr);

// Many independent streams: with at least as many streams as pool threads each stream runs
// single-threaded on one thread, else the streams run one after another with all threads.
// results [count]; each carries its own status. Returns the first failure (or ok).
Status compactBatch(const Problem* problems, size_t count, const Options& options, cpu::ThreadPool& pool,
                    Result* results, Workspace* workspace = nullptr);

// Fits beta and values (as enabled by options) for a given keep set (ascending, unique,
// containing every protected row; problem.target is ignored) and fills the diagnostics.
// Chunking does not apply. For user-chosen keep sets and for baselines.
Status fitKeepSet(const Problem& problem, const int32_t* keep, uint32_t keepCount, const Options& options,
                  cpu::ThreadPool* pool, Result* result, Workspace* workspace = nullptr);

}  // namespace kvc::compaction
