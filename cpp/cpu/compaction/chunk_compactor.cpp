// See chunk_compactor.h. Layouts: n reference queries, Tk rows in the chunk, t kept rows
// (f of them unprotected). Matrices over kept rows are stored transposed, one kept row per
// line ([t, n]), so that their Gram matrices are GEMMs of a row-major operand with itself.
#include "chunk_compactor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "topk.h"
#include "attention_pass.h"
#include "workspace.h"

namespace kvc::compaction {

using cpu::compaction::CompactionKernels;
using cpu::compaction::packedSize;

namespace {

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Lower triangle of G = A Aᵀ for a [rows, n] (row stride n), written as a full symmetric f64
// matrix g [rows, rows].
double* gramF64(const CompactionKernels& k, Parallel& par, const float* a, uint32_t rows, uint32_t n) {
  double* g = scratch<double>(Scratch::kGram, static_cast<size_t>(rows) * rows);
  if (rows == 0) return g;
  float* packed = scratch<float>(Scratch::kPackedGram, packedSize(n, rows, k.nr));
  k.packTransposed(a, n, rows, n, packed);
  float* lower = scratch<float>(Scratch::kGramLower, static_cast<size_t>(rows) * rows);
  const uint32_t blocks = (rows + kQueryBlock - 1) / kQueryBlock;
  par.forEach(blocks, [&](uint32_t b, uint32_t) {
    const uint32_t i0 = b * kQueryBlock, m = std::min(kQueryBlock, rows - i0);
    // Only the columns up to the block's last row: the upper triangle is the mirror.
    k.gemm(m, i0 + m, n, a + static_cast<size_t>(i0) * n, n, packed, lower + static_cast<size_t>(i0) * rows, rows, false);
  });
  for (uint32_t i = 0; i < rows; ++i)
    for (uint32_t j = 0; j <= i; ++j) {
      const double v = lower[static_cast<size_t>(i) * rows + j];
      g[static_cast<size_t>(i) * rows + j] = v;
      g[static_cast<size_t>(j) * rows + i] = v;
    }
  return g;
}

// Factorizes g + λI (λ = ridge · mean diagonal) into l, raising λ ×100 up to five times.
// Returns the λ used, or a negative number when no factorization succeeded.
double factorWithRidge(const CompactionKernels& k, const double* g, uint32_t size, float ridge, double* l,
                       uint32_t* raises) {
  double trace = 0.0;
  for (uint32_t i = 0; i < size; ++i) trace += g[static_cast<size_t>(i) * size + i];
  const double scale = trace > 0.0 && std::isfinite(trace) ? trace / size : 1.0;
  double lambda = std::max(static_cast<double>(ridge), 1e-12) * scale;
  for (int attempt = 0; attempt < 6; ++attempt) {
    std::copy(g, g + static_cast<size_t>(size) * size, l);
    for (uint32_t i = 0; i < size; ++i) l[static_cast<size_t>(i) * size + i] += lambda;
    if (k.cholesky(l, size, size)) return lambda;
    lambda *= 100.0;
    ++*raises;
  }
  return -1.0;
}

// w ∈ [lo, hi] minimizing ‖Aᵀw − target‖ given G = A Aᵀ and h = A target: the ridge
// solution clamped into the box, then projected coordinate descent.
void solveNnls(const CompactionKernels& k, const double* g, const std::vector<double>& h, uint32_t size,
               const Options& o, std::vector<double>* w, uint32_t* raises) {
  double* l = scratch<double>(Scratch::kFactor, static_cast<size_t>(size) * size);
  const double lambda = factorWithRidge(k, g, size, o.ridge, l, raises);
  // The ridge pulls w toward 1 (beta toward the old bias), not toward 0: where the reference
  // queries do not pin a weight down, the row keeps its own mass.
  std::vector<double> hr(h);
  for (double& x : hr) x += std::max(lambda, 0.0);
  w->assign(hr.begin(), hr.end());
  if (lambda >= 0.0) {
    k.choleskySolve(l, size, size, w->data(), 1, 1);
  } else {
    std::fill(w->begin(), w->end(), 1.0);
  }
  for (double& x : *w)
    if (!std::isfinite(x)) x = 1.0;
  // The factor is no longer needed: its buffer holds G + λI for the descent.
  double* reg = l;
  std::copy(g, g + static_cast<size_t>(size) * size, reg);
  for (uint32_t i = 0; i < size; ++i) reg[static_cast<size_t>(i) * size + i] += std::max(lambda, 0.0);
  std::vector<double> cd(size);
  k.nnlsCoordinateDescent(reg, size, size, hr.data(), o.minWeight, o.maxWeight, o.nnlsIterations, w->data(), cd.data());
}

// dst [rows, D] = src rows idx[0..rows) of a [*, D] matrix.
void gatherRows(const float* src, uint32_t D, const int32_t* idx, uint32_t rows, float* dst) {
  for (uint32_t r = 0; r < rows; ++r)
    std::copy(src + static_cast<size_t>(idx[r]) * D, src + static_cast<size_t>(idx[r] + 1) * D,
              dst + static_cast<size_t>(r) * D);
}

// out [cols.size(), n] = columns cols of e [n, ld] (one column per line).
void gatherColumns(const float* e, uint32_t ld, uint32_t n, const int32_t* cols, uint32_t count, float* out) {
  for (uint32_t i = 0; i < n; ++i) {
    const float* row = e + static_cast<size_t>(i) * ld;
    for (uint32_t c = 0; c < count; ++c) out[static_cast<size_t>(c) * n + i] = row[cols[c]];
  }
}

// Greedy selection of `want` unprotected rows (OMP on the attention mass): e [n, Tk] the
// exps, z [n] their row sums, colNormSq [Tk] = Σ_i e_ij².
void selectOmp(const CompactionKernels& k, Parallel& par, const float* e, uint32_t n, uint32_t Tk, const float* z,
               const double* colNormSq, std::vector<uint8_t>& chosen, uint32_t want, uint32_t target,
               const Options& o, std::vector<int32_t>* picked) {
  // Target of the free rows: z minus the mass of the protected rows (their w stays 1).
  std::vector<double> zp(z, z + n);
  std::vector<int32_t> prot;
  for (uint32_t j = 0; j < Tk; ++j)
    if (chosen[j]) prot.push_back(static_cast<int32_t>(j));
  for (uint32_t i = 0; i < n; ++i) {
    const float* row = e + static_cast<size_t>(i) * Tk;
    for (int32_t j : prot) zp[i] -= row[j];
  }
  std::vector<float> residual(n), zpf(n);
  for (uint32_t i = 0; i < n; ++i) residual[i] = zpf[i] = static_cast<float>(zp[i]);

  const uint32_t step = std::max<uint32_t>(1, target / std::max<uint32_t>(1, o.ompStepDivisor));
  float* mt = scratch<float>(Scratch::kMassFree, static_cast<size_t>(want) * n);  // chosen columns, one per line
  double* g = scratch<double>(Scratch::kGram, static_cast<size_t>(want) * want);
  std::vector<double> h(want, 0.0), w(want, 0.0), cdScratch(want);
  std::vector<float> corr(Tk), score(Tk), gNew, packedNew, packedZ(packedSize(n, 1, k.nr));
  k.packRows(zpf.data(), 1, n, 1, packedZ.data());
  std::vector<int32_t> topScratch(Tk), fresh(step);
  const uint32_t colTasks = std::max<uint32_t>(1, std::min<uint32_t>(par.participants() * 4, Tk / 256));
  const uint32_t colSpan = ((Tk + colTasks - 1) / colTasks + 15) / 16 * 16;
  uint32_t have = 0;
  double targetNorm = 0.0;
  for (uint32_t i = 0; i < n; ++i) targetNorm += zp[i] * zp[i];
  targetNorm = std::sqrt(targetNorm);
  while (have < want) {
    // Once the mass is explained, further greedy picks only chase noise (and overfit w):
    // stop, and let the caller fill the rest of the budget by attention.
    double rn = 0.0;
    for (uint32_t i = 0; i < n; ++i) rn += static_cast<double>(residual[i]) * residual[i];
    if (have > 0 && std::sqrt(rn) <= o.ompTolerance * targetNorm) break;
    // Correlation of every row's exp column with the unexplained mass, per unit norm.
    par.forEach(colTasks, [&](uint32_t task, uint32_t) {
      const uint32_t c0 = std::min(Tk, task * colSpan), c1 = std::min(Tk, c0 + colSpan);
      if (c1 > c0) k.gemvTransposed(e + c0, Tk, n, c1 - c0, residual.data(), corr.data() + c0);
    });
    for (uint32_t j = 0; j < Tk; ++j)
      score[j] = colNormSq[j] > 0.0 ? static_cast<float>(corr[j] / std::sqrt(colNormSq[j]))
                                    : -std::numeric_limits<float>::infinity();
    const uint32_t kStep = std::min(step, want - have);
    const uint32_t got = cpu::compaction::selectTopK(score.data(), Tk, chosen.data(), kStep, fresh.data(),
                                                     topScratch.data());
    if (got == 0) break;
    for (uint32_t c = 0; c < got; ++c) {
      chosen[fresh[c]] = 1;
      picked->push_back(fresh[c]);
    }
    float* mtNew = mt + static_cast<size_t>(have) * n;
    gatherColumns(e, Tk, n, fresh.data(), got, mtNew);
    const uint32_t total = have + got;
    // New columns of the Gram matrix: [total, got] = mt[0..total) · mtNewᵀ.
    packedNew.resize(packedSize(n, got, k.nr));
    k.packTransposed(mtNew, n, got, n, packedNew.data());
    gNew.resize(static_cast<size_t>(total) * got);
    k.gemm(total, got, n, mt, n, packedNew.data(), gNew.data(), got, false);
    for (uint32_t a = 0; a < total; ++a)
      for (uint32_t b = 0; b < got; ++b) {
        const double v = gNew[static_cast<size_t>(a) * got + b];
        g[static_cast<size_t>(a) * want + have + b] = v;
        g[static_cast<size_t>(have + b) * want + a] = v;
      }
    std::vector<float> hNew(got);
    k.gemm(got, 1, n, mtNew, n, packedZ.data(), hNew.data(), 1, false);
    for (uint32_t b = 0; b < got; ++b) {
      h[have + b] = hNew[b];
      const double nsq = colNormSq[fresh[b]];
      w[have + b] = nsq > 0.0 ? std::max(static_cast<double>(o.minWeight), corr[fresh[b]] / nsq) : o.minWeight;
    }
    have = total;
    // A warm-started partial refit: enough to steer the next choices; the final fit is exact.
    k.nnlsCoordinateDescent(g, have, want, h.data(), o.minWeight, o.maxWeight, std::min(o.nnlsIterations, 8u),
                            w.data(), cdScratch.data());
    for (uint32_t i = 0; i < n; ++i) residual[i] = zpf[i];
    for (uint32_t j = 0; j < have; ++j) {
      const float wj = static_cast<float>(w[j]);
      const float* col = mt + static_cast<size_t>(j) * n;
      for (uint32_t i = 0; i < n; ++i) residual[i] -= wj * col[i];
    }
  }
}

// The compacted rows' statistics for the reference queries from the value fit: xt [t, n]
// the softmax over the kept rows (normalized per query), m and z its max logit and sum of
// exps. y [n, DV] = xtᵀ · fitted (DV: the value width). The same quantities as an attention
// pass over the compacted rows, up to f32 rounding (normalized before the product instead of after; z
// summed in another order), without its Q·Kᵀ product and softmax.
void compactedFromFit(const CompactionKernels& k, Parallel& par, const float* xt, uint32_t t, uint32_t n,
                      const float* fitted, uint32_t DV, std::vector<float>&& m, std::vector<float>&& z,
                      QueryStats* out) {
  float* x = scratch<float>(Scratch::kProtSoftmax, static_cast<size_t>(n) * t);  // xtᵀ [n, t]
  for (uint32_t c = 0; c < t; ++c) {
    const float* row = xt + static_cast<size_t>(c) * n;
    for (uint32_t i = 0; i < n; ++i) x[static_cast<size_t>(i) * t + c] = row[i];
  }
  const OperandB values = operandB(k, fitted, t, DV, Scratch::kPackedKeptValues);
  out->m = std::move(m);
  out->z = std::move(z);
  out->y.resize(static_cast<size_t>(n) * DV);
  const uint32_t blocks = (n + kQueryBlock - 1) / kQueryBlock;
  par.forEach(blocks, [&](uint32_t b, uint32_t) {
    const uint32_t i0 = b * kQueryBlock, rows = std::min(kQueryBlock, n - i0);
    gemmB(k, rows, DV, t, x + static_cast<size_t>(i0) * t, t, values, out->y.data() + static_cast<size_t>(i0) * DV, DV);
  });
}

}  // namespace

Status compactChunk(const CompactionKernels& k, Parallel& par, const ChunkInput& in, const Options& o,
                    ChunkOutput* out) {
  const Problem& p = *in.problem;
  const uint32_t D = p.D, DV = p.valueDim(), n = p.n, r0 = in.rowBegin, Tk = in.rowEnd - in.rowBegin;
  const float* keys = p.keys + static_cast<size_t>(r0) * D;
  const float* values = p.values + static_cast<size_t>(r0) * DV;
  std::vector<float> bias(Tk, 0.0f);
  if (p.bias) std::copy(p.bias + r0, p.bias + r0 + Tk, bias.begin());
  std::vector<uint8_t> prot(Tk, 0);
  uint32_t protCount = 0;
  if (p.protectedRows)
    for (uint32_t j = 0; j < Tk; ++j) protCount += (prot[j] = p.protectedRows[r0 + j] ? 1 : 0);

  // ---- 1. attention statistics of the original rows ----
  auto t0 = std::chrono::steady_clock::now();
  const bool fixed = in.fixedKeep != nullptr;
  const bool keepAll = !fixed && in.target >= Tk;
  // Fitting t biases and t value rows to n reference queries is underdetermined when n < t:
  // the fits then chase the reference queries and generalize worse than the plain kept rows
  // (measured on synthetic and stories260K streams). Such chunks keep the rows the
  // attention statistics select, with their bias and values as they are.
  // OMP refits the bias after every step and overfits sooner: it needs n >= 2t (measured:
  // held-out error above 1 at t = 0.8 n); below that it selects like highest-attention.
  const bool omp = !fixed && !keepAll && n >= 2ull * in.target && o.method == Method::kOmp && protCount < in.target;
  PackedRows packed;
  packRows(k, keys, values, Tk, D, DV, Scratch::kPackedKeys, Scratch::kPackedValues, &packed);
  out->original.m.resize(n);
  out->original.z.resize(n);
  out->original.y.resize(static_cast<size_t>(n) * DV);
  std::vector<double> colAcc(Tk, 0.0);
  float* exps = omp ? scratch<float>(Scratch::kExps, static_cast<size_t>(n) * Tk) : nullptr;
  AttendArgs a;
  a.queries = in.scaledQueries;
  a.nq = n;
  a.rows = &packed;
  a.bias = bias.data();
  a.rowMax = out->original.m.data();
  a.rowSum = out->original.z.data();
  a.out = out->original.y.data();
  a.exps = exps;
  const bool relative = o.massObjective == MassObjective::kRelative;
  a.columnStat = fixed || keepAll       ? ColumnStat::kNone
                 : omp && !relative     ? ColumnStat::kExpSquares
                                        : ColumnStat::kAttentionSquares;
  a.colAcc = colAcc.data();
  attend(k, par, a);
  out->secondsScores += secondsSince(t0);

  // ---- 2. selection ----
  t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> keep;
  if (fixed) {
    keep.assign(in.fixedKeep, in.fixedKeep + in.fixedKeepCount);
  } else if (keepAll) {
    for (uint32_t j = 0; j < Tk; ++j) keep.push_back(static_cast<int32_t>(j));
  } else if (protCount >= in.target) {
    for (uint32_t j = 0; j < Tk; ++j)
      if (prot[j]) keep.push_back(static_cast<int32_t>(j));
  } else if (omp) {
    std::vector<uint8_t> chosen = prot;
    std::vector<int32_t> picked;
    std::vector<float> ones(n, 1.0f);
    if (relative) {
      // OMP on A = E / z with target 1: the relative mass of every query counts the same.
      for (uint32_t i = 0; i < n; ++i) {
        const float z = out->original.z[i], inv = z > 0.0f ? 1.0f / z : 0.0f;
        float* row = exps + static_cast<size_t>(i) * Tk;
        for (uint32_t j = 0; j < Tk; ++j) row[j] *= inv;
      }
    }
    selectOmp(k, par, exps, n, Tk, relative ? ones.data() : out->original.z.data(), colAcc.data(), chosen,
              in.target - protCount, in.target, o, &picked);
    const uint32_t rest = in.target - protCount - static_cast<uint32_t>(picked.size());
    if (rest > 0) {
      // Fill by the column norms of A (relative) or E (absolute): the highest-attention score.
      std::vector<float> score(Tk);
      std::vector<int32_t> top(rest), scratch(Tk);
      for (uint32_t j = 0; j < Tk; ++j) score[j] = static_cast<float>(colAcc[j]);
      const uint32_t got = cpu::compaction::selectTopK(score.data(), Tk, chosen.data(), rest, top.data(), scratch.data());
      for (uint32_t c = 0; c < got; ++c) chosen[top[c]] = 1;
    }
    for (uint32_t j = 0; j < Tk; ++j)
      if (chosen[j]) keep.push_back(static_cast<int32_t>(j));
  } else {
    std::vector<float> score(Tk), pooled(Tk);
    for (uint32_t j = 0; j < Tk; ++j) score[j] = static_cast<float>(std::sqrt(colAcc[j] / n));
    if (o.pooling != Pooling::kNone && o.poolKernel > 1) {
      cpu::compaction::pool1d(score.data(), Tk, o.poolKernel,
                              o.pooling == Pooling::kMax ? cpu::compaction::PoolMode::kMax
                                                         : cpu::compaction::PoolMode::kAvg,
                              pooled.data());
      score.swap(pooled);
    }
    std::vector<int32_t> top(in.target - protCount), scratch(Tk);
    const uint32_t got = cpu::compaction::selectTopK(score.data(), Tk, prot.data(), in.target - protCount, top.data(),
                                                     scratch.data());
    std::vector<uint8_t> chosen = prot;
    for (uint32_t c = 0; c < got; ++c) chosen[top[c]] = 1;
    for (uint32_t j = 0; j < Tk; ++j)
      if (chosen[j]) keep.push_back(static_cast<int32_t>(j));
  }
  out->secondsSelect += secondsSince(t0);

  const uint32_t t = static_cast<uint32_t>(keep.size());
  std::vector<int32_t> freeIdx, protIdx;  // positions within keep
  for (uint32_t c = 0; c < t; ++c) (prot[keep[c]] ? protIdx : freeIdx).push_back(static_cast<int32_t>(c));
  const uint32_t f = static_cast<uint32_t>(freeIdx.size());
  float* keptKeys = scratch<float>(Scratch::kKeptKeys, static_cast<size_t>(t) * D);
  std::vector<float> keptBias(t);
  gatherRows(keys, D, keep.data(), t, keptKeys);
  for (uint32_t c = 0; c < t; ++c) keptBias[c] = bias[keep[c]];
  const bool fitBeta = o.fitBeta && f > 0 && !keepAll && (fixed || n >= t);
  const bool fitValues = o.fitValues && f > 0 && !keepAll && (fixed || n >= t);

  // Raw logits of the kept rows, one kept row per line: lt [t, n] = K_keep · (Q/√D)ᵀ.
  float* lt = nullptr;
  if (fitBeta || fitValues) {
    lt = scratch<float>(Scratch::kLogits, static_cast<size_t>(t) * n);
    k.gemm(t, n, D, keptKeys, D, in.packedQueries, lt, n, false);
  }

  // ---- 3. beta: NNLS on the attention mass ----
  t0 = std::chrono::steady_clock::now();
  std::vector<float> beta(keptBias);
  if (fitBeta) {
    // mt [t, n]: E restricted to the kept rows, relative to the original row max.
    // Relative objective: divided by z as well, i.e. A restricted to the kept rows, target 1.
    float* mt = scratch<float>(Scratch::kMass, static_cast<size_t>(t) * n);
    std::copy(lt, lt + static_cast<size_t>(t) * n, mt);
    std::vector<float> negMax(n), target(n);
    for (uint32_t i = 0; i < n; ++i) {
      const float z = out->original.z[i];
      negMax[i] = -out->original.m[i] - (relative && z > 0.0f ? std::log(z) : 0.0f);
      target[i] = relative ? (z > 0.0f ? 1.0f : 0.0f) : z;
    }
    k.expAffine(mt, n, t, n, keptBias.data(), negMax.data());
    for (int32_t c : protIdx) {
      const float* row = mt + static_cast<size_t>(c) * n;
      for (uint32_t i = 0; i < n; ++i) target[i] -= row[i];
    }
    float* mtFree = scratch<float>(Scratch::kMassFree, static_cast<size_t>(f) * n);
    for (uint32_t c = 0; c < f; ++c)
      std::copy(mt + static_cast<size_t>(freeIdx[c]) * n, mt + static_cast<size_t>(freeIdx[c] + 1) * n,
                mtFree + static_cast<size_t>(c) * n);
    std::vector<double> h(f), w;
    const double* g = gramF64(k, par, mtFree, f, n);
    std::vector<float> packedTarget(packedSize(n, 1, k.nr)), hf(f);
    k.packRows(target.data(), 1, n, 1, packedTarget.data());
    k.gemm(f, 1, n, mtFree, n, packedTarget.data(), hf.data(), 1, false);
    for (uint32_t c = 0; c < f; ++c) h[c] = hf[c];
    solveNnls(k, g, h, f, o, &w, &out->ridgeRaises);
    for (uint32_t c = 0; c < f; ++c) beta[freeIdx[c]] = keptBias[freeIdx[c]] + static_cast<float>(std::log(w[c]));
  }
  out->secondsNnls += secondsSince(t0);

  // ---- 4. values: least squares against the original attention output ----
  t0 = std::chrono::steady_clock::now();
  std::vector<float> fitted(static_cast<size_t>(t) * DV);
  gatherRows(values, DV, keep.data(), t, fitted.data());
  // The value fit's softmax over the kept rows is the compacted rows' attention to the
  // reference queries: step 5 reuses it (fitStatsValid) instead of a second attention pass.
  std::vector<float> fitMax, fitSum;
  bool fitStatsValid = false;
  if (fitValues) {
    // xt [t, n] = softmax over the kept rows (per query), with the new bias.
    float* xt = lt;  // the logits are not needed after this
    std::vector<float> colMax(n, -std::numeric_limits<float>::infinity()), colSum(n, 0.0f);
    for (uint32_t c = 0; c < t; ++c) {
      const float* row = xt + static_cast<size_t>(c) * n;
      for (uint32_t i = 0; i < n; ++i) colMax[i] = std::max(colMax[i], row[i] + beta[c]);
    }
    for (uint32_t i = 0; i < n; ++i) colMax[i] = -colMax[i];
    k.expAffine(xt, n, t, n, beta.data(), colMax.data());
    for (uint32_t c = 0; c < t; ++c) {
      const float* row = xt + static_cast<size_t>(c) * n;
      for (uint32_t i = 0; i < n; ++i) colSum[i] += row[i];
    }
    fitMax.resize(n);
    fitSum.assign(colSum.begin(), colSum.end());
    fitStatsValid = true;
    for (uint32_t i = 0; i < n; ++i) {
      fitMax[i] = -colMax[i];
      // An empty or non-finite softmax: step 5 takes the attention path, which handles it.
      if (!std::isfinite(fitMax[i]) || !(colSum[i] > 0.0f) || !std::isfinite(colSum[i])) fitStatsValid = false;
    }
    for (uint32_t i = 0; i < n; ++i) colSum[i] = colSum[i] > 0.0f ? 1.0f / colSum[i] : 0.0f;
    for (uint32_t c = 0; c < t; ++c) {
      float* row = xt + static_cast<size_t>(c) * n;
      for (uint32_t i = 0; i < n; ++i) row[i] *= colSum[i];
    }
    // Right-hand side: Y minus what the protected rows (values fixed) already contribute.
    float* rhs = scratch<float>(Scratch::kRhs, static_cast<size_t>(n) * DV);
    std::copy(out->original.y.begin(), out->original.y.end(), rhs);
    if (!protIdx.empty()) {
      const uint32_t np = static_cast<uint32_t>(protIdx.size());
      float* xp = scratch<float>(Scratch::kProtSoftmax, static_cast<size_t>(n) * np);
      float* vp = scratch<float>(Scratch::kProtValues, static_cast<size_t>(np) * DV);
      float* contrib = scratch<float>(Scratch::kProtContrib, static_cast<size_t>(n) * DV);
      for (uint32_t c = 0; c < np; ++c) {
        const float* row = xt + static_cast<size_t>(protIdx[c]) * n;
        for (uint32_t i = 0; i < n; ++i) xp[static_cast<size_t>(i) * np + c] = row[i];
        std::copy(fitted.data() + static_cast<size_t>(protIdx[c]) * DV, fitted.data() + static_cast<size_t>(protIdx[c] + 1) * DV,
                  vp + static_cast<size_t>(c) * DV);
      }
      std::vector<float> packedVp(packedSize(np, DV, k.nr));
      k.packRows(vp, DV, np, DV, packedVp.data());
      k.gemm(n, DV, np, xp, np, packedVp.data(), contrib, DV, false);
      for (size_t i = 0; i < static_cast<size_t>(n) * DV; ++i) rhs[i] -= contrib[i];
    }
    float* xtFree = scratch<float>(Scratch::kSoftmaxFree, static_cast<size_t>(f) * n);
    for (uint32_t c = 0; c < f; ++c)
      std::copy(xt + static_cast<size_t>(freeIdx[c]) * n, xt + static_cast<size_t>(freeIdx[c] + 1) * n,
                xtFree + static_cast<size_t>(c) * n);
    const double* g = gramF64(k, par, xtFree, f, n);
    double* l = scratch<double>(Scratch::kFactor, static_cast<size_t>(f) * f);
    float* r = scratch<float>(Scratch::kFitRhs, static_cast<size_t>(f) * DV);
    const OperandB rhsB = operandB(k, rhs, n, DV, Scratch::kPackedRhs);
    const uint32_t blocks = (f + kQueryBlock - 1) / kQueryBlock;
    par.forEach(blocks, [&](uint32_t b, uint32_t) {
      const uint32_t i0 = b * kQueryBlock, m = std::min(kQueryBlock, f - i0);
      gemmB(k, m, DV, n, xtFree + static_cast<size_t>(i0) * n, n, rhsB, r + static_cast<size_t>(i0) * DV, DV);
    });
    const double lambda = factorWithRidge(k, g, f, o.ridge, l, &out->ridgeRaises);
    if (lambda < 0.0)
      return internalError("compaction: the value fit's Gram matrix is not positive definite even with ridge " +
                           std::to_string(o.ridge) + "·1e10 (non-finite keys, values or queries?)");
    // The ridge pulls the fitted values toward the rows' original values (not toward 0), so
    // that a row the reference queries barely see keeps its value instead of being overfit.
    double* c = scratch<double>(Scratch::kFitSolution, static_cast<size_t>(f) * DV);
    for (uint32_t cc = 0; cc < f; ++cc)
      for (uint32_t d = 0; d < DV; ++d)
        c[static_cast<size_t>(cc) * DV + d] =
            static_cast<double>(r[static_cast<size_t>(cc) * DV + d]) + lambda * fitted[static_cast<size_t>(freeIdx[cc]) * DV + d];
    k.choleskySolve(l, f, f, c, DV, DV);
    for (uint32_t cc = 0; cc < f; ++cc)
      for (uint32_t d = 0; d < DV; ++d)
        fitted[static_cast<size_t>(freeIdx[cc]) * DV + d] = static_cast<float>(c[static_cast<size_t>(cc) * DV + d]);
  }
  out->secondsValues += secondsSince(t0);

  // ---- 5. diagnostics: the compacted rows as attention will see them ----
  t0 = std::chrono::steady_clock::now();
  const bool heldOut = in.scaledHeldOut && p.nHeldOut > 0;
  PackedRows compact;
  if (!fitStatsValid || heldOut)
    packRows(k, keptKeys, fitted.data(), t, D, DV, Scratch::kPackedKeptKeys, Scratch::kPackedKeptValues, &compact);
  auto run = [&](const float* q, uint32_t nq, const PackedRows& rows, const float* b, QueryStats* s) {
    s->m.resize(nq);
    s->z.resize(nq);
    s->y.resize(static_cast<size_t>(nq) * DV);
    AttendArgs x;
    x.queries = q;
    x.nq = nq;
    x.rows = &rows;
    x.bias = b;
    x.rowMax = s->m.data();
    x.rowSum = s->z.data();
    x.out = s->y.data();
    attend(k, par, x);
  };
  if (fitStatsValid) {
    compactedFromFit(k, par, lt, t, n, fitted.data(), DV, std::move(fitMax), std::move(fitSum), &out->compacted);
  } else {
    run(in.scaledQueries, n, compact, beta.data(), &out->compacted);
  }
  if (heldOut) {
    run(in.scaledHeldOut, p.nHeldOut, packed, bias.data(), &out->heldOutOriginal);
    run(in.scaledHeldOut, p.nHeldOut, compact, beta.data(), &out->heldOutCompacted);
  }
  out->secondsDiagnostics += secondsSince(t0);

  out->keep.resize(t);
  for (uint32_t c = 0; c < t; ++c) out->keep[c] = keep[c] + static_cast<int32_t>(r0);
  out->beta = std::move(beta);
  out->values = std::move(fitted);
  return Status::ok();
}

}  // namespace kvc::compaction
