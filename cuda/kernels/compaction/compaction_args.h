// Argument structs and launchers of the compaction kernels (Attention Matching and eviction
// scoring on the device, ARCHITECTURE §4.3/§4.5/§9). Every launch covers a whole batch of
// problems (one problem = one chunk of one (layer, kv head) stream); per-problem sizes and
// pointers live in device arrays of these structs. Every pointer is a device pointer.
#pragma once
#include <cstdint>

#include "../../compat.cuh"
#include "../kernel_args.h"  // valueWidth
#include "kvc/views.h"

KVC_CUDA_NAMESPACE_BEGIN

// ---- batched GEMM ------------------------------------------------------------------------
// c (+)= A · B with A(i, k) = a[i·as0 + k·as1] and B(k, j) = b[k·bs0 + j·bs1], so that one
// kernel serves Q Kᵀ, E V, Gram matrices M Mᵀ and the normal-equation right-hand sides.
// f32 inputs, f32 accumulation in k order (the CPU's packed GEMM also accumulates in f32).
struct GemmProblem {
  const float* a = nullptr;
  const float* b = nullptr;
  float* c = nullptr;  // [M, N] row stride ldc
  uint32_t M = 0, N = 0, K = 0;
  uint32_t as0 = 0, as1 = 0, bs0 = 0, bs1 = 0, ldc = 0;
  uint32_t accumulate = 0;
};
// grid.x covers the largest problem's tiles (64 × 64); blocks past a problem's tiles exit.
cudaError_t launchBatchedGemm(const GemmProblem* problems, uint32_t count, uint32_t maxTiles, cudaStream_t stream);
constexpr uint32_t kGemmTile = 64;

// ---- row decode ----------------------------------------------------------------------------
// Decodes rows [0, length) of one stream from the pool into f32 scratch: keys as stored (in the
// rotated space attention uses: queries are rotated instead), values with the rotation undone
// (the value fit works in the caller's space, and the writer rotates on the way back).
struct DecodeStream {
  const int32_t* blockTable = nullptr;  // [ceil(length / blockSize)]
  uint32_t length = 0;
  uint32_t sinks = 0, recent = 0;       // protected rows: [0, sinks) and [length - recent, length)
  float* keys = nullptr;                // [length, D] or nullptr
  float* values = nullptr;              // [length, D] or nullptr
  float* bias = nullptr;                // [length] or nullptr
  uint8_t* protectedRows = nullptr;     // [length] or nullptr
};
struct DecodeArgs {
  PoolView pool;
  RowCodec codec;                       // signs: device pointers or nullptr
  const DecodeStream* streams = nullptr;
  uint32_t count = 0;
  uint32_t keysOriginal = 0;            // 1: keys with the rotation undone too (eviction scores)
};
cudaError_t launchDecodeRows(const DecodeArgs& args, uint32_t maxLength, cudaStream_t stream);

// Reference queries in the space of the stored keys, pre-scaled by 1/√D:
// out[i] = rotate(src[i]) · scale (rotate only when `rotate`); src rows either the caller's
// queries or keys already stored rotated (rotate = 0). One job per stream.
struct QueryJob {
  const float* src = nullptr;  // [rows of src]
  uint32_t n = 0;
  uint32_t srcRows = 0;        // > 0: out row i = src row i·srcRows/n (key subsample)
  uint32_t rotate = 0;
  float* out = nullptr;        // [n, D]
};
cudaError_t launchPrepareQueries(const QueryJob* jobs, uint32_t count, uint32_t maxN, uint32_t D, const float* keySigns,
                                 float scale, cudaStream_t stream);

// ---- softmax statistics -----------------------------------------------------------------
// Rows of s [rows, cols] (row stride ld): s += bias, m = max, s = exp(s − m), z = Σ s; rows
// whose max is not finite become 0 with z = 0 (softmaxRows of the CPU kernels).
struct SoftmaxJob {
  float* s = nullptr;
  uint32_t rows = 0, cols = 0, ld = 0;
  const float* bias = nullptr;  // [cols] or nullptr
  float* m = nullptr;           // [rows]
  float* z = nullptr;           // [rows]
  float* y = nullptr;           // [rows, D] divided by z in normalizeRows (0 for z = 0)
};
cudaError_t launchSoftmaxRows(const SoftmaxJob* jobs, uint32_t count, uint32_t maxRows, cudaStream_t stream);
cudaError_t launchNormalizeRows(const SoftmaxJob* jobs, uint32_t count, uint32_t maxRows, uint32_t D,
                                cudaStream_t stream);

// colAcc[j] = Σ_i (s[i, j] · w_i)² with w_i = 1/z_i (0 when z_i = 0), or w_i = 1 when
// `plainSquares` (OMP's column norms of E); f64 accumulation over the rows.
// mode 2: colAcc[j] = Σ_i s[i, j] / z_i (mean attention numerators; eviction).
struct ColumnJob {
  const float* s = nullptr;
  uint32_t rows = 0, cols = 0, ld = 0;
  const float* z = nullptr;
  uint32_t mode = 0;  // 0: attention squares, 1: exp squares, 2: attention
  double* colAcc = nullptr;
};
cudaError_t launchColumnStats(const ColumnJob* jobs, uint32_t count, uint32_t maxCols, cudaStream_t stream);

// ---- top-k --------------------------------------------------------------------------------
// Per job: chosen[j] = 1 for the protected rows and for the min(k, eligible) highest scores
// among the others (higher score first, equal -> lower index, NaN lowest: the CPU's
// selectTopK). Then keep[0..t) = the chosen rows ascending (plus indexBase), and the
// positions within keep of the unchosen-before-protected rows (freePos) and protected rows
// (protPos). Scores are optionally pooled (SnapKV) first: pool = 1 none, odd kernel.
struct TopKJob {
  const float* scores = nullptr;          // [n]  (or from colAcc when scores == nullptr)
  const double* colAcc = nullptr;         // [n]: score = (float)sqrt(colAcc / divisor)
  double divisor = 1.0;
  uint32_t canonicalZero = 1;             // 1: −0 ties with +0 (compaction); 0: −0 < +0 (cpu::selectTopK)
  uint32_t n = 0;
  uint32_t k = 0;
  uint32_t pool = 1;                      // odd window along the rows
  uint32_t poolMax = 1;                   // 1: max pooling, 0: average
  const uint8_t* exclude = nullptr;       // [n] protected (always chosen), or nullptr
  uint8_t* chosen = nullptr;              // [n] in/out: rows already chosen stay chosen
  float* raw = nullptr;                   // [n] scratch (scores from colAcc)
  float* pooled = nullptr;                // [n] scratch (pooled scores)
  int32_t indexBase = 0;
  int32_t* keep = nullptr;                // [t] or nullptr
  int32_t* freePos = nullptr;             // [t] or nullptr
  int32_t* protPos = nullptr;             // [t] or nullptr
  uint32_t* counts = nullptr;             // [2]: free, protected (or nullptr)
  const uint32_t* kPtr = nullptr;         // k read from the device (OMP), overrides k
  uint32_t colAccSqrt = 1;                // 0: score = (float)colAcc (OMP's fill)
  int32_t* picked = nullptr;              // [k] the rows this call chose, ascending, or nullptr
  uint32_t* pickedCount = nullptr;
};
cudaError_t launchTopK(const TopKJob* jobs, uint32_t count, cudaStream_t stream);

// ---- OMP: greedy selection on the attention mass (chunk_compactor.cpp selectOmp) ----------
// The loop runs on the device: the host launches step() as often as the longest chunk can
// need (ceil(want / step)); a chunk that is done (budget met, mass explained, nothing left)
// skips the rest. No host round trip per step.
struct OmpJob {
  float* e = nullptr;                  // [n, Tk] E (relative: scaled in place to A = E / z)
  uint32_t n = 0, Tk = 0;
  const float* z = nullptr;            // [n]
  uint32_t relative = 1;
  const double* colNormSq = nullptr;   // [Tk] Σ_i e_ij² of the (scaled) columns
  const uint8_t* prot = nullptr;       // [Tk]
  uint8_t* chosen = nullptr;           // [Tk]
  uint32_t want = 0, step = 1;         // rows to pick (target − |P|), rows per step
  float* zpf = nullptr;                // [n] target of the free rows
  float* residual = nullptr;           // [n]
  float* corr = nullptr;               // [Tk]
  float* score = nullptr;              // [Tk]
  float* mt = nullptr;                 // [want, n] picked columns, one per line
  double* g = nullptr;                 // [want, want]
  double* h = nullptr;                 // [want]
  double* w = nullptr;                 // [want]
  double* grad = nullptr;              // [want]
  int32_t* fresh = nullptr;            // [step] rows picked by the current step
  uint32_t* state = nullptr;           // [4]: have, done, k of this step (or of the fill), picked now
  double* targetNorm = nullptr;        // [1]
};
cudaError_t launchOmpInit(const OmpJob* jobs, uint32_t count, cudaStream_t stream);
// One greedy step: stop test, correlations, top-k of the step, Gram / h update, warm refit.
cudaError_t launchOmpStep(const OmpJob* jobs, const TopKJob* stepTopK, uint32_t count, uint32_t maxTk, float tolerance,
                          float minWeight, float maxWeight, uint32_t sweeps, cudaStream_t stream);
// After the loop: k of the fill = want − have.
cudaError_t launchOmpFinish(const OmpJob* jobs, uint32_t count, cudaStream_t stream);

// ---- f64 solves ---------------------------------------------------------------------------
// Factor of G + λI with G the f32 Gram matrix [size, size] (row stride size) and λ = ridge ·
// max(mean diagonal, ...) raised ×100 up to five times when a pivot fails (factorWithRidge).
// l [size, size] f64 lower factor; lambda[0] = λ used, or −1 when every attempt failed;
// raises[0] += attempts that failed.
struct CholeskyJob {
  const float* gram = nullptr;
  uint32_t size = 0;
  double* l = nullptr;
  double* lambda = nullptr;
  uint32_t* raises = nullptr;
  const float* h = nullptr;  // optional [size]: hr = h + max(λ, 0) (the NNLS right-hand side)
  double* hr = nullptr;      // [size]
};
cudaError_t launchCholeskyRidge(const CholeskyJob* jobs, uint32_t count, float ridge, cudaStream_t stream);

// Solves (L Lᵀ) x = b in place for nrhs columns (b [size, nrhs] f64); one thread per column.
struct SolveJob {
  const double* l = nullptr;
  uint32_t size = 0;
  double* b = nullptr;
  uint32_t nrhs = 0;
  const double* lambda = nullptr;  // skip the job when *lambda < 0
};
cudaError_t launchCholeskySolve(const SolveJob* jobs, uint32_t count, uint32_t maxRhs, cudaStream_t stream);

// NNLS of the mass fit (solveNnls): w0 = ridge solution with hr = h + λ (w0 = 1 when the
// factorization failed; non-finite -> 1), then projected coordinate descent on
// ½ wᵀ(G + λI)w − hrᵀw in [lo, hi]. Writes beta[freePos[c]] = keptBias[freePos[c]] + log w_c.
struct NnlsJob {
  const float* gram = nullptr;   // [f, f]
  const float* h = nullptr;      // [f]
  const double* l = nullptr;     // factor of G + λI
  const double* lambda = nullptr;
  uint32_t f = 0;
  double* w = nullptr;           // [f] scratch
  double* grad = nullptr;        // [f] scratch
  const int32_t* freePos = nullptr;
  const float* keptBias = nullptr;  // [t]
  float* beta = nullptr;            // [t]
};
cudaError_t launchNnls(const NnlsJob* jobs, uint32_t count, float minWeight, float maxWeight, uint32_t sweeps,
                       cudaStream_t stream);

// ---- fit assembly (elementwise / small reductions over one chunk) ---------------------------
// Everything one chunk's beta and value fit needs, t kept rows (f free, np protected), n
// queries, D head dim. Layouts of matrices over kept rows: one kept row per line ([t, n]).
struct FitJob {
  uint32_t n = 0, t = 0, f = 0, np = 0, D = 0;
  uint32_t VD = 0;                    // value width (valueWidth of the codec: D unless low-rank ranks differ)
  uint32_t relative = 1;              // MassObjective::kRelative
  const int32_t* keep = nullptr;      // [t] local ascending
  const int32_t* freePos = nullptr;   // [f] positions within keep
  const int32_t* protPos = nullptr;   // [np]
  const float* keys = nullptr;        // [Tk, D] chunk rows (stored space)
  const float* values = nullptr;      // [Tk, VD] original space
  const float* bias = nullptr;        // [Tk]
  const float* m = nullptr;           // [n] original row max
  const float* z = nullptr;           // [n] original row sums
  const float* y = nullptr;           // [n, VD] original normalized output
  float* keptKeys = nullptr;          // [t, D]
  float* keptBias = nullptr;          // [t]
  float* beta = nullptr;              // [t] fitted bias (starts as keptBias)
  float* fitted = nullptr;            // [t, VD] fitted values (starts as the kept values)
  float* lt = nullptr;                // [t, n] logits K_keep Q̂ᵀ
  float* mt = nullptr;                // [t, n] mass matrix, then the softmax X
  float* free = nullptr;              // [f, n] rows of mt / X of the free kept rows
  float* target = nullptr;            // [n]
  float* rhs = nullptr;               // [n, VD]
  float* r = nullptr;                 // [f, VD] X_F · rhs (f32)
  double* c = nullptr;                // [f, VD] f64 right-hand side / solution
  const double* lambda = nullptr;     // value-fit ridge
};
// keptKeys, keptBias, beta = keptBias, fitted = kept values.
cudaError_t launchGatherKept(const FitJob* jobs, uint32_t count, uint32_t maxT, cudaStream_t stream);
// mt = exp(lt + keptBias_c − m_i − log z_i (relative)), target_i = (relative ? 1 : z_i) −
// Σ_prot mt[c, i], free = mt rows of the free kept rows.
cudaError_t launchMassMatrix(const FitJob* jobs, uint32_t count, uint32_t maxN, cudaStream_t stream);
// mt = softmax over kept rows of lt + beta (per query), rhs = Y − X_P V_P, free = X_F.
cudaError_t launchValueSystem(const FitJob* jobs, uint32_t count, uint32_t maxN, uint32_t D, cudaStream_t stream);
// c = r + λ · V_F (the ridge pulls toward the original values).
cudaError_t launchValueRhs(const FitJob* jobs, uint32_t count, uint32_t maxF, uint32_t D, cudaStream_t stream);
// fitted[freePos[c]] = (float)c[c].
cudaError_t launchValueStore(const FitJob* jobs, uint32_t count, uint32_t maxF, uint32_t D, cudaStream_t stream);

// ---- diagnostics and the changed rows -------------------------------------------------------
// Per stream: merges the per-query statistics of its chunks (log-sum-exp merge, in chunk
// order) and computes the relative output error and mean |exp(lse_c − lse) − 1|.
struct QueryStatsDev {
  float* m = nullptr;
  float* z = nullptr;
  float* y = nullptr;  // [nq, D]
};
struct ErrorJob {
  const QueryStatsDev* ref = nullptr;  // [chunks]
  const QueryStatsDev* got = nullptr;  // [chunks]
  uint32_t chunks = 0;
  uint32_t nq = 0;
  float* out = nullptr;  // [2]: output error, mass error (NaN when nq = 0)
};
cudaError_t launchErrors(const ErrorJob* jobs, uint32_t count, uint32_t D, cudaStream_t stream);

// changed[c] = 1 when fitted row c or its beta differs (bitwise) from the stored row.
struct ChangedJob {
  uint32_t t = 0;
  const int32_t* keep = nullptr;  // [t] local
  const float* values = nullptr;  // [Tk, VD] decoded original values of the chunk (VD: launch argument)
  const float* bias = nullptr;    // [Tk]
  const float* fitted = nullptr;  // [t, VD]
  const float* beta = nullptr;    // [t]
  uint8_t* changed = nullptr;     // [t]
  uint32_t* count = nullptr;      // atomically added to
};
cudaError_t launchChangedRows(const ChangedJob* jobs, uint32_t count, uint32_t maxT, uint32_t D, cudaStream_t stream);

// ---- eviction scores (cpp/core/eviction/scores.cpp) -----------------------------------------
// kKeyNorm: score[r] = −‖k_r‖₂ (f64 sum of squares) of keys [rows, D] in the original space.
// kMeanAttention: score[r] = max over |r' − r| ≤ pool/2 of colAcc[r'] / queries (f64), where
// colAcc[r] = Σ_i softmax_i(r) from launchColumnStats mode 2.
struct RowScoreJob {
  uint32_t rows = 0;
  uint32_t kind = 0;            // 1: key norm, 2: mean attention
  const float* keys = nullptr;  // [rows, D]
  const double* colAcc = nullptr;
  uint32_t queries = 1, pool = 1;
  uint32_t poolSplit = 0;       // rows [0, poolSplit) and [poolSplit, rows) are max-pooled apart
  float* scores = nullptr;      // [rows]
};
cudaError_t launchRowScores(const RowScoreJob* jobs, uint32_t count, uint32_t maxRows, uint32_t D, cudaStream_t stream);

// ---- apply ----------------------------------------------------------------------------------
// Re-encodes the changed rows of one rebuilt stream: row j gets fitted values j (through
// append's write path) and beta j, when changed[j].
struct ApplyFitArgs {
  PoolView pool;
  RowCodec codec;                       // valueSigns: device pointer or nullptr
  const int32_t* blockTable = nullptr;  // whole rebuilt table
  uint32_t count = 0;                   // rows = kept rows
  const float* values = nullptr;        // [count, D]
  const float* beta = nullptr;          // [count]
  const uint8_t* changed = nullptr;     // [count]
};
cudaError_t launchApplyFit(const ApplyFitArgs& args, cudaStream_t stream);

KVC_CUDA_NAMESPACE_END
