// The numerical operations of compaction (Attention Matching, ARCHITECTURE §4.5) and of
// eviction scoring as backend operations (§9): the core decides which streams, targets and
// protected rows; a backend computes scores, selections and fits where the rows live (host
// memory for the CPU, device memory for CUDA) and hands back only per-stream reports and
// keep sets. Plain types: no N-API, no CUDA, no core headers.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvc/status.h"
#include "kvc/views.h"

namespace kvc::compaction {

enum class Method {
  kHighestAttention,  // rows with the largest RMS (over queries) of their attention weight
  kOmp,               // greedy: the rows most correlated with the unexplained attention mass
};

enum class Pooling { kNone, kMax, kAvg };

// How the mass fit (and OMP's residual) weighs the reference queries.
enum class MassObjective {
  kRelative,  // ‖(E_F w − z') / z‖: every query's relative mass error counts the same
  kAbsolute,  // ‖E_F w − z'‖ with E relative to each query's max logit
};

struct Options {
  Method method = Method::kHighestAttention;
  // Tikhonov term of both normal-equation solves, relative to the mean diagonal entry of the
  // matrix (so it does not depend on the scale of E or X). Raised ×100 (up to 5 times) when a
  // Cholesky factorization fails.
  float ridge = 1e-4f;
  MassObjective massObjective = MassObjective::kRelative;
  uint32_t nnlsIterations = 30;  // projected coordinate-descent sweeps after the clamped solve
  float minWeight = 1e-6f;       // bounds of w = exp(beta − b): beta stays finite
  float maxWeight = 1e6f;
  // > 0: contiguous chunks of chunkSize rows are compacted independently (chunk c gets its
  // share of target by cumulative rounding, so the shares sum to target) and concatenated.
  uint32_t chunkSize = 0;
  // Smoothing of the highest-attention score along the rows (SnapKV-style); kernel odd, e.g. 5.
  Pooling pooling = Pooling::kNone;
  uint32_t poolKernel = 0;
  // OMP adds max(1, target / ompStepDivisor) rows per step, then refits w.
  uint32_t ompStepDivisor = 16;
  // OMP stops once the unexplained mass is below this fraction of the target mass (norm) and
  // fills the rest of the budget by the highest-attention score.
  float ompTolerance = 1e-3f;
  bool fitBeta = true;    // false: beta = b (no mass fit; for eviction-style baselines)
  bool fitValues = true;  // false: the kept rows' original values
};

}  // namespace kvc::compaction

namespace kvc {

// One stream of a compaction batch as a backend sees it. Everything here is host memory
// except the rows themselves, which the backend reads from its own pool.
struct CompactionStreamInput {
  StreamView stream;          // rows [0, stream.length); block table in host memory
  uint32_t target = 0;        // rows to keep, protected ones included; 1 <= target <= length
  uint32_t sinks = 0;         // protected: the first min(sinks, length) rows
  uint32_t recent = 0;        // protected: the last min(recent, length) rows
  // Reference queries [n, headDim] (unscaled; the backend applies 1/√headDim), pooled over
  // the GQA group. nullptr: the backend uses a uniform subsample of the stream's own keys as
  // it stores them (m = min(length, keyQueries) rows, row i·length/m for i < m).
  const float* queries = nullptr;
  uint32_t n = 0;
  uint32_t keyQueries = 1024;
  const float* heldOut = nullptr;  // [nHeldOut, headDim] for diagnostics only, or nullptr
  uint32_t nHeldOut = 0;
};

// What comes back to the host for one stream: the keep set (the core rebuilds the block
// table from it) and the diagnostics. Fitted rows stay with the backend (CompactionFit).
struct CompactionStreamReport {
  std::vector<int32_t> keep;  // [t] kept row indices, ascending
  uint32_t changedRows = 0;   // kept rows whose value or beta the fit changed
  // Relative attention-output error and mean |exp(lse_compact − lse) − 1| over the reference
  // queries, and the same over the held-out queries (NaN when there are none).
  float outputError = 0.0f;
  float massError = 0.0f;
  float heldOutOutputError = 0.0f;
  float heldOutMassError = 0.0f;
  uint32_t ridgeRaises = 0;
  uint32_t queryCount = 0;   // reference queries used (n, or the key subsample's size)
  bool queriesFromKeys = false;
  double secondsScores = 0, secondsSelect = 0, secondsNnls = 0, secondsValues = 0, secondsDiagnostics = 0;
  double secondsRead = 0;  // reading (decoding) the stream's rows for the fit
};

// The fitted beta and values of one compaction batch, held where the backend computed them
// (host memory for the CPU, device memory for CUDA) until the core applies them.
class CompactionFit {
 public:
  virtual ~CompactionFit() = default;
  virtual uint64_t bytes() const = 0;  // memory it holds, for workspace accounting
};

struct CompactionControl {
  uint32_t threads = 1;                         // CPU threads (the calling one included)
  const std::atomic<bool>* cancel = nullptr;    // raised: stop early with kDisposed or kAborted
};

// Eviction scores (ARCHITECTURE §4.3). The core computes the scores that need no rows
// (recency, accumulated mass, random, caller-given) and hands them in as kGiven; a backend
// computes the ones that read keys where the keys live.
enum class RowScoreKind : uint8_t {
  kGiven,          // RowScoreInput::given [length], host memory
  kKeyNorm,        // −‖k‖₂ in the original (unrotated) space
  kMeanAttention,  // mean over the queries of softmax(q·kᵀ/√D + beta), then max-pooled
};

struct RowScoreInput {
  StreamView stream;
  RowScoreKind kind = RowScoreKind::kGiven;
  const float* given = nullptr;    // kGiven: [length] host
  const float* queries = nullptr;  // kMeanAttention: [nQueries, headDim] host, unscaled, original space
  uint32_t nQueries = 0;
  uint32_t pool = 1;               // kMeanAttention: odd max-pool kernel along the rows (1: none)
  // kMeanAttention: rows [0, poolSplit) and [poolSplit, length) are pooled separately, so that
  // SnapKV's observation window and the rows before it do not bleed into each other (0: one range).
  uint32_t poolSplit = 0;
};

// One stream's keep-set selection: the protected rows (first `sinks`, last `recent`) plus the
// keep − |protected| highest-scoring other rows; equal scores: the lower index wins; NaN
// ranks below every number (the CPU's selectTopK rule, which every backend reproduces).
struct RowSelectInput {
  RowScoreInput score;
  uint32_t keep = 0;  // rows to keep, protected included (clamped to length)
  uint32_t sinks = 0, recent = 0;
};

}  // namespace kvc
