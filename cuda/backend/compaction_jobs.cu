// See compaction_batch.h: the launch arguments of one device batch, in the order the kernels
// run (scores, selection incl. OMP, beta fit, value fit, diagnostics, changed rows).
#include <algorithm>

#include "compaction_batch.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

uint32_t gemmTiles(uint32_t M, uint32_t N) {
  return ((M + kGemmTile - 1) / kGemmTile) * ((N + kGemmTile - 1) / kGemmTile);
}

// Row-major operands: C [M, N] = A [M, K] · Bᵀ with B given as [N, K] rows ("NT") or as
// [K, N] rows ("NN"); strides in floats.
GemmProblem gemmNT(const float* a, const float* bRows, float* c, uint32_t M, uint32_t N, uint32_t K) {
  GemmProblem g;
  g.a = a, g.b = bRows, g.c = c, g.M = M, g.N = N, g.K = K;
  g.as0 = K, g.as1 = 1, g.bs0 = 1, g.bs1 = K, g.ldc = N;
  return g;
}
GemmProblem gemmNN(const float* a, const float* b, float* c, uint32_t M, uint32_t N, uint32_t K) {
  GemmProblem g;
  g.a = a, g.b = b, g.c = c, g.M = M, g.N = N, g.K = K;
  g.as0 = K, g.as1 = 1, g.bs0 = N, g.bs1 = 1, g.ldc = N;
  return g;
}

}  // namespace

void buildJobs(const BatchPlan& plan, const Bases& bases, const CompactionStreamInput* streams, uint32_t count,
               const compaction::Options& o, uint32_t D, uint32_t VD, const CudaCompactionFit& fit, uint32_t first,
               BatchJobs* jobs) {
  BatchJobs& J = *jobs;
  const auto& sp = plan.sp;
  const auto& cp = plan.cp;
  const bool relative = o.massObjective == compaction::MassObjective::kRelative;
  auto W = [&](size_t off) { return bases.W(off); };
  auto O = [&](size_t off) { return bases.O(off); };
  auto Z = [&](size_t off) { return bases.Z(off); };
  auto F = [&](size_t off) { return bases.F(off); };
  auto f32 = [](uint8_t* p) { return reinterpret_cast<float*>(p); };
  J.decode.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const StreamPlanDev& s = sp[i];
    DecodeStream& d = J.decode[i];
    d.length = s.T;
    d.sinks = std::min<uint32_t>(streams[i].sinks, s.T);
    d.recent = std::min<uint32_t>(streams[i].recent, s.T);
    d.keys = f32(W(s.keys));
    d.values = f32(W(s.values));
    d.bias = f32(W(s.bias));
    d.protectedRows = W(s.prot);
    QueryJob q;
    q.n = s.n;
    q.out = f32(W(s.q));
    if (s.fromKeys) {
      q.src = f32(W(s.keys));  // stored keys are already in the keys' space
      q.srcRows = s.T;
    } else {
      q.rotate = 1;
    }
    J.queryJobs.push_back(q);
    if (s.nh) {
      QueryJob h;
      h.n = s.nh;
      h.out = f32(W(s.qh));
      h.rotate = 1;
      J.queryJobs.push_back(h);
    }
    J.maxRows = std::max(J.maxRows, s.T);
    J.maxQ = std::max({J.maxQ, s.n, s.nh});
  }
  // Query sources that live in the upload get their device address once `args` exists.
  auto softmax = [&](const StatsAt& st, uint32_t rows, uint32_t cols, const float* bias) {
    SoftmaxJob j;
    j.s = f32(W(st.s));
    j.rows = rows, j.cols = cols, j.ld = cols;
    j.bias = bias;
    j.m = f32(W(st.m));
    j.z = f32(W(st.z));
    j.y = f32(W(st.y));
    return j;
  };
  for (const ChunkPlan& c : cp) {
    const StreamPlanDev& s = sp[c.stream];
    const uint32_t n = s.n, Tk = c.Tk, t = c.t, f = c.f;
    const float* q = f32(W(s.q));
    const float* keys = f32(W(s.keys)) + static_cast<size_t>(c.r0) * D;
    const float* values = f32(W(s.values)) + static_cast<size_t>(c.r0) * VD;
    const float* bias = f32(W(s.bias)) + c.r0;
    float* fitted = f32(F(fit.streams[first + c.stream].values)) + static_cast<size_t>(c.fitRow) * VD;
    float* beta = f32(F(fit.streams[first + c.stream].beta)) + c.fitRow;
    J.maxT = std::max(J.maxT, t);
    J.maxTk = std::max(J.maxTk, Tk);
    J.maxF = std::max(J.maxF, f);
    // 1. attention statistics of the original rows
    J.gScores.push_back(gemmNT(q, keys, f32(W(c.original.s)), n, Tk, D));
    J.tilesScores = std::max(J.tilesScores, gemmTiles(n, Tk));
    J.smOriginal.push_back(softmax(c.original, n, Tk, bias));
    J.gOutputs.push_back(gemmNN(f32(W(c.original.s)), values, f32(W(c.original.y)), n, VD, Tk));
    J.tilesOut = std::max(J.tilesOut, gemmTiles(n, VD));
    if (!c.keepAll) {
      ColumnJob cj;
      cj.s = f32(W(c.original.s));
      cj.rows = n, cj.cols = Tk, cj.ld = Tk;
      cj.z = f32(W(c.original.z));
      // OMP: column norms of A (relative) or E (absolute); otherwise the attention squares.
      cj.mode = c.omp && !relative ? 1 : 0;
      cj.colAcc = reinterpret_cast<double*>(W(c.colAcc));
      J.columns.push_back(cj);
    }
    if (s.nh) {
      J.gHeldScores.push_back(gemmNT(f32(W(s.qh)), keys, f32(W(c.heldOriginal.s)), s.nh, Tk, D));
      J.tilesHS = std::max(J.tilesHS, gemmTiles(s.nh, Tk));
      J.smHeld.push_back(softmax(c.heldOriginal, s.nh, Tk, bias));
      J.gHeldOutputs.push_back(gemmNN(f32(W(c.heldOriginal.s)), values, f32(W(c.heldOriginal.y)), s.nh, VD, Tk));
      J.tilesHO = std::max(J.tilesHO, gemmTiles(s.nh, VD));
    }
    // 2. selection (highest attention; keepAll and |P| >= target fall out of k)
    TopKJob tj;
    tj.colAcc = reinterpret_cast<const double*>(W(c.colAcc));
    tj.divisor = static_cast<double>(n);
    tj.n = Tk;
    tj.k = t - c.prot;
    if (o.pooling != compaction::Pooling::kNone && o.poolKernel > 1) {
      tj.pool = o.poolKernel;
      tj.poolMax = o.pooling == compaction::Pooling::kMax ? 1 : 0;
    }
    tj.exclude = W(s.prot) + c.r0;
    tj.chosen = Z(c.chosen);
    tj.raw = f32(W(c.raw));
    tj.pooled = f32(W(c.pooled));
    tj.keep = reinterpret_cast<int32_t*>(O(c.keep));
    tj.freePos = reinterpret_cast<int32_t*>(W(c.freePos));
    tj.protPos = reinterpret_cast<int32_t*>(W(c.protPos));
    tj.counts = reinterpret_cast<uint32_t*>(O(c.counts));
    if (c.omp) {
      // The rows OMP picked are chosen already; the rest of the budget goes by the column
      // norms (no square root, no pooling), k read from the OMP state.
      tj.colAccSqrt = 0;
      tj.pool = 1;
      tj.kPtr = reinterpret_cast<const uint32_t*>(Z(c.state)) + 2;
      OmpJob oj;
      oj.e = f32(W(c.original.s));
      oj.n = n, oj.Tk = Tk;
      oj.z = f32(W(c.original.z));
      oj.relative = relative ? 1 : 0;
      oj.colNormSq = tj.colAcc;
      oj.prot = tj.exclude;
      oj.chosen = tj.chosen;
      oj.want = c.want, oj.step = c.step;
      oj.zpf = f32(W(c.zpf));
      oj.residual = f32(W(c.residual));
      oj.corr = f32(W(c.corr));
      oj.score = f32(W(c.score));
      oj.mt = f32(W(c.ompMt));
      oj.g = reinterpret_cast<double*>(W(c.ompG));
      oj.h = reinterpret_cast<double*>(W(c.ompH));
      oj.w = reinterpret_cast<double*>(W(c.ompW));
      oj.grad = reinterpret_cast<double*>(W(c.ompGrad));
      oj.fresh = reinterpret_cast<int32_t*>(W(c.fresh));
      oj.state = reinterpret_cast<uint32_t*>(Z(c.state));
      oj.targetNorm = reinterpret_cast<double*>(W(c.targetNorm));
      J.ompJobs.push_back(oj);
      TopKJob sj;
      sj.scores = oj.score;
      sj.n = Tk;
      sj.kPtr = oj.state + 2;
      sj.chosen = oj.chosen;
      sj.picked = oj.fresh;
      sj.pickedCount = oj.state + 3;
      J.ompTopK.push_back(sj);
      J.ompIterations = std::max(J.ompIterations, (c.want + c.step - 1) / c.step);
    }
    J.topk.push_back(tj);
    // 3.-4. the fits
    FitJob fj;
    fj.n = n, fj.t = t, fj.f = f, fj.np = c.prot, fj.D = D, fj.VD = VD;
    fj.relative = relative ? 1 : 0;
    fj.keep = tj.keep;
    fj.freePos = tj.freePos;
    fj.protPos = tj.protPos;
    fj.keys = keys, fj.values = values, fj.bias = bias;
    fj.m = f32(W(c.original.m));
    fj.z = f32(W(c.original.z));
    fj.y = f32(W(c.original.y));
    fj.keptKeys = f32(W(c.keptKeys));
    fj.keptBias = f32(W(c.keptBias));
    fj.beta = beta;
    fj.fitted = fitted;
    uint32_t* raises = reinterpret_cast<uint32_t*>(O(c.raises));
    if (c.fitBeta || c.fitValues) {
      fj.lt = f32(W(c.lt));
      fj.mt = f32(W(c.mt));
      fj.free = f32(W(c.free));
      J.gLogits.push_back(gemmNT(fj.keptKeys, q, fj.lt, t, n, D));
      J.tilesLt = std::max(J.tilesLt, gemmTiles(t, n));
    }
    if (c.fitBeta) {
      fj.target = f32(W(c.target_));
      FitJob b = fj;
      J.fitBeta.push_back(b);
      J.gBetaGram.push_back(gemmNT(fj.free, fj.free, f32(W(c.gram)), f, f, n));
      J.tilesBG = std::max(J.tilesBG, gemmTiles(f, f));
      GemmProblem gh = gemmNT(fj.free, fj.target, f32(W(c.h)), f, 1, n);
      J.gBetaH.push_back(gh);
      J.tilesBH = std::max(J.tilesBH, gemmTiles(f, 1));
      CholeskyJob ch;
      ch.gram = f32(W(c.gram));
      ch.size = f;
      ch.l = reinterpret_cast<double*>(W(c.l));
      ch.lambda = reinterpret_cast<double*>(W(c.lambdaBeta));
      ch.raises = raises;
      ch.h = f32(W(c.h));
      ch.hr = reinterpret_cast<double*>(W(c.w));
      J.cholBeta.push_back(ch);
      SolveJob sj;
      sj.l = ch.l, sj.size = f, sj.b = ch.hr, sj.nrhs = 1, sj.lambda = ch.lambda;
      J.solveBeta.push_back(sj);
      NnlsJob nj;
      nj.gram = ch.gram, nj.h = ch.h, nj.l = ch.l, nj.lambda = ch.lambda, nj.f = f;
      nj.w = ch.hr;
      nj.grad = reinterpret_cast<double*>(W(c.grad));
      nj.freePos = fj.freePos;
      nj.keptBias = fj.keptBias;
      nj.beta = beta;
      J.nnls.push_back(nj);
    }
    if (c.fitValues) {
      fj.rhs = f32(W(c.rhs));
      fj.r = f32(W(c.r));
      fj.c = reinterpret_cast<double*>(W(c.c));
      fj.lambda = reinterpret_cast<const double*>(O(c.lambdaValue));
      J.fitValues.push_back(fj);
      J.gValGram.push_back(gemmNT(fj.free, fj.free, f32(W(c.gram)), f, f, n));
      J.tilesVG = std::max(J.tilesVG, gemmTiles(f, f));
      J.gValR.push_back(gemmNN(fj.free, fj.rhs, fj.r, f, VD, n));
      J.tilesVR = std::max(J.tilesVR, gemmTiles(f, VD));
      CholeskyJob ch;
      ch.gram = f32(W(c.gram));
      ch.size = f;
      ch.l = reinterpret_cast<double*>(W(c.l));
      ch.lambda = reinterpret_cast<double*>(O(c.lambdaValue));
      ch.raises = raises + 1;
      J.cholValues.push_back(ch);
      SolveJob sj;
      sj.l = ch.l, sj.size = f, sj.b = fj.c, sj.nrhs = VD, sj.lambda = ch.lambda;
      J.solveValues.push_back(sj);
    }
    J.fitAll.push_back(fj);
    // 5. diagnostics: the compacted rows as attention will see them
    J.gDiagScores.push_back(gemmNT(q, fj.keptKeys, f32(W(c.compacted.s)), n, t, D));
    J.tilesDS = std::max(J.tilesDS, gemmTiles(n, t));
    J.smCompacted.push_back(softmax(c.compacted, n, t, beta));
    J.gDiagOutputs.push_back(gemmNN(f32(W(c.compacted.s)), fitted, f32(W(c.compacted.y)), n, VD, t));
    J.tilesDO = std::max(J.tilesDO, gemmTiles(n, VD));
    if (s.nh) {
      J.gHeldDiagScores.push_back(gemmNT(f32(W(s.qh)), fj.keptKeys, f32(W(c.heldCompacted.s)), s.nh, t, D));
      J.tilesHDS = std::max(J.tilesHDS, gemmTiles(s.nh, t));
      J.smHeldCompacted.push_back(softmax(c.heldCompacted, s.nh, t, beta));
      J.gHeldDiagOutputs.push_back(gemmNN(f32(W(c.heldCompacted.s)), fitted, f32(W(c.heldCompacted.y)), s.nh, VD, t));
      J.tilesHDO = std::max(J.tilesHDO, gemmTiles(s.nh, VD));
    }
    ChangedJob cj;
    cj.t = t;
    cj.keep = fj.keep;
    cj.values = values;
    cj.bias = bias;
    cj.fitted = fitted;
    cj.beta = beta;
    cj.changed = F(fit.streams[first + c.stream].changed) + c.fitRow;
    cj.count = reinterpret_cast<uint32_t*>(O(s.changedCount));
    J.changed.push_back(cj);
  }
  // Per-query statistics arrays for the error reduction, and the error jobs.
  auto dev = [&](const StatsAt& st) {
    QueryStatsDev q;
    q.m = f32(W(st.m));
    q.z = f32(W(st.z));
    q.y = f32(W(st.y));
    return q;
  };
  for (const ChunkPlan& c : cp) {
    J.statsRef.push_back(dev(c.original));
    J.statsGot.push_back(dev(c.compacted));
    if (sp[c.stream].nh) {
      J.statsHeldRef.push_back(dev(c.heldOriginal));
      J.statsHeldGot.push_back(dev(c.heldCompacted));
    }
  }
}

KVC_CUDA_NAMESPACE_END
