// See cuda_compaction.h. One compactStreams call: plan every chunk of every stream on the host
// (all sizes are known before any kernel runs: t = target, f = t − |protected|), lay out one
// device workspace, upload the queries and the launch arguments in one copy, run the kernel
// sequence (decode, scores, top-k, beta fit, value fit, diagnostics) and download only the
// keep sets and the per-stream numbers. The fitted rows stay in a CudaCompactionFit.
#include "cuda_compaction.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "../kernels/compaction/compaction_args.h"
#include "device_memory.h"
#include "staging.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class CudaCompactionFit final : public CompactionFit {
 public:
  struct Stream {
    uint32_t rows = 0;
    uint32_t piece = 0;                        // which allocation (one per device batch)
    size_t values = 0, beta = 0, changed = 0;  // offsets in it
  };
  uint64_t bytes() const override {
    uint64_t total = 0;
    for (const auto& p : pieces) total += p->bytes();
    return total;
  }
  const DeviceMemory& memory(const Stream& s) const { return *pieces[s.piece]; }
  std::vector<std::unique_ptr<DeviceMemory>> pieces;
  std::vector<Stream> streams;
  uint32_t headDim = 0;
};

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

// Per-query statistics of one attention pass (offsets).
struct StatsAt {
  size_t s = 0, m = 0, z = 0, y = 0;
};

struct ChunkPlan {
  uint32_t stream = 0, r0 = 0, Tk = 0, target = 0, prot = 0, t = 0, f = 0;
  bool keepAll = false, fitBeta = false, fitValues = false, omp = false;
  uint32_t fitRow = 0;                        // first row of this chunk in the stream's fit
  StatsAt original, compacted, heldOriginal, heldCompacted;
  size_t colAcc = 0, raw = 0, pooled = 0, chosen = 0, keep = 0, freePos = 0, protPos = 0, counts = 0;
  size_t keptKeys = 0, keptBias = 0, lt = 0, mt = 0, free = 0, target_ = 0, gram = 0, h = 0, l = 0;
  size_t lambdaBeta = 0, w = 0, grad = 0, rhs = 0, r = 0, c = 0, lambdaValue = 0, raises = 0;
  // OMP
  uint32_t want = 0, step = 1;
  size_t zpf = 0, residual = 0, corr = 0, score = 0, ompMt = 0, ompG = 0, ompH = 0, ompW = 0, ompGrad = 0, fresh = 0,
         state = 0, targetNorm = 0;
};

struct StreamPlanDev {
  uint32_t T = 0, n = 0, nh = 0, chunk0 = 0, chunks = 0, tTotal = 0;
  bool fromKeys = false;
  size_t keys = 0, values = 0, bias = 0, prot = 0, q = 0, qh = 0, errors = 0, changedCount = 0;
  size_t stagedQ = SIZE_MAX, stagedQh = SIZE_MAX;  // raw queries in the upload
};

Status validateInputs(const CompactionStreamInput* streams, uint32_t count, const compaction::Options& o,
                      const RowCodec& codec, uint64_t committed) {
  if (count && !streams) return invalidArgument("compactStreams: streams is null");
  if (!(o.ridge >= 0.0f) || !std::isfinite(o.ridge)) return invalidArgument("compaction: ridge must be finite and >= 0");
  if (!(o.minWeight > 0.0f) || !(o.maxWeight >= o.minWeight) || !std::isfinite(o.maxWeight))
    return invalidArgument("compaction: need 0 < minWeight <= maxWeight < inf");
  const uint32_t D = codec.headDim;
  for (uint32_t i = 0; i < count; ++i) {
    const CompactionStreamInput& s = streams[i];
    const std::string at = "compactStreams: stream " + std::to_string(i) + ": ";
    if (s.stream.length <= 0) return invalidArgument(at + "length must be >= 1");
    if (!s.stream.blockTable) return invalidArgument(at + "block table is null");
    if (s.target == 0 || s.target > static_cast<uint32_t>(s.stream.length))
      return invalidArgument(at + "target must be in [1, length], got " + std::to_string(s.target));
    if (s.queries && s.n == 0) return invalidArgument(at + "n (reference queries) must be >= 1");
    if (s.nHeldOut > 0 && !s.heldOut) return invalidArgument(at + "heldOut must be a [nHeldOut, D] array");
    const size_t nq = static_cast<size_t>(s.queries ? s.n : 0) * D, nh = static_cast<size_t>(s.nHeldOut) * D;
    for (size_t e = 0; e < nq; ++e)
      if (!std::isfinite(s.queries[e])) return invalidArgument(at + "queries[" + std::to_string(e) + "] is not finite");
    for (size_t e = 0; e < nh; ++e)
      if (!std::isfinite(s.heldOut[e])) return invalidArgument(at + "heldOut[" + std::to_string(e) + "] is not finite");
  }
  (void)committed;
  return Status::ok();
}

Status checkTable(const int32_t* table, uint32_t blocks, uint64_t committed, const std::string& what) {
  for (uint32_t b = 0; b < blocks; ++b)
    if (table[b] < 0 || static_cast<uint64_t>(table[b]) >= committed)
      return invalidArgument(what + ": block id " + std::to_string(table[b]) + " is outside the committed pool");
  return Status::ok();
}

}  // namespace

namespace {

// Device bytes one stream needs during compactStreams (the plan below, to within its alignment):
// the decoded rows and, per chunk, the score matrices and the fit's systems.
uint64_t workspaceEstimate(const CompactionStreamInput& in, const compaction::Options& o, uint32_t D) {
  const uint64_t T = static_cast<uint64_t>(in.stream.length);
  const uint64_t n = in.queries ? in.n : std::min<uint64_t>(T, std::max<uint32_t>(1, in.keyQueries));
  const uint64_t nh = in.heldOut ? in.nHeldOut : 0;
  const uint64_t chunk = o.chunkSize == 0 ? T : std::min<uint64_t>(o.chunkSize, T);
  uint64_t bytes = (2 * T * D + T + (n + nh) * D) * 4 + T;
  for (uint64_t r0 = 0; r0 < T; r0 += chunk) {
    const uint64_t Tk = std::min(T, r0 + chunk) - r0;
    const uint64_t t = std::max<uint64_t>(1, (in.target * Tk + T - 1) / T) + std::min<uint64_t>(Tk, in.sinks + in.recent);
    const uint64_t f = t;
    bytes += 4 * ((n + nh) * (Tk + t + 2 * D + 4) + Tk * 6 + t * (2 * D + 8) + 2 * t * n + f * n + f * f + f * D) +
             8 * (Tk + f * f + f * D + 4 * f) + 1024;
    if (o.method == compaction::Method::kOmp) bytes += 4 * t * n + 8 * t * t + 4 * (2 * n + 2 * Tk);
  }
  return bytes + bytes / 8;
}

// One device batch: streams [0, count) of `streams` go through the kernels together; their
// fitted rows become piece fit->pieces.size() of the fit, as fit->streams[first + i].
Status compactDeviceBatch(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                          const CompactionStreamInput* streams, uint32_t count, const compaction::Options& o,
                          const CompactionControl& control, CompactionStreamReport* reports, CudaCompactionFit* fit,
                          uint32_t first) {
  const uint32_t D = codec.headDim, bs = pool.layout.blockSize;
  const bool relative = o.massObjective == compaction::MassObjective::kRelative;
  auto cancelled = [&]() { return control.cancel && control.cancel->load(std::memory_order_relaxed); };
  const uint32_t piece = static_cast<uint32_t>(fit->pieces.size());
  fit->pieces.emplace_back(new DeviceMemory());
  const auto tPlan = std::chrono::steady_clock::now();

  // ---- plan: sizes and offsets ----
  Arena out(8), zero, work, fitArena;
  std::vector<StreamPlanDev> sp(count);
  std::vector<ChunkPlan> cp;
  StagingBuffer staging;  // uploaded: block tables, raw queries, then the launch arguments
  std::vector<size_t> tableAt(count);
  for (uint32_t i = 0; i < count; ++i) {
    const CompactionStreamInput& in = streams[i];
    StreamPlanDev& s = sp[i];
    s.T = static_cast<uint32_t>(in.stream.length);
    const uint32_t blocks = (s.T + bs - 1) / bs;
    KVC_RETURN_IF_ERROR(checkTable(in.stream.blockTable, blocks, ctx.committedBlocks,
                                   "compactStreams: stream " + std::to_string(i)));
    tableAt[i] = staging.addArray(in.stream.blockTable, blocks);
    s.fromKeys = in.queries == nullptr;
    s.n = s.fromKeys ? std::min(s.T, std::max<uint32_t>(1, in.keyQueries)) : in.n;
    s.nh = in.heldOut ? in.nHeldOut : 0;
    if (!s.fromKeys) s.stagedQ = staging.addArray(in.queries, static_cast<size_t>(s.n) * D);
    if (s.nh) s.stagedQh = staging.addArray(in.heldOut, static_cast<size_t>(s.nh) * D);
    s.keys = work.array<float>(static_cast<size_t>(s.T) * D);
    s.values = work.array<float>(static_cast<size_t>(s.T) * D);
    s.bias = work.array<float>(s.T);
    s.prot = work.array<uint8_t>(s.T);
    s.q = work.array<float>(static_cast<size_t>(s.n) * D);
    s.qh = work.array<float>(static_cast<size_t>(s.nh) * D);
    s.errors = out.array<float>(4);
    s.changedCount = out.array<uint32_t>(1);

    const uint32_t T = s.T, n = s.n;
    const uint32_t chunk = o.chunkSize == 0 ? T : std::min(o.chunkSize, T);
    const uint32_t sinks = std::min<uint32_t>(in.sinks, T), recent = std::min<uint32_t>(in.recent, T);
    auto share = [&](uint32_t row) {
      return static_cast<uint32_t>((static_cast<uint64_t>(in.target) * row + T / 2) / T);
    };
    s.chunk0 = static_cast<uint32_t>(cp.size());
    for (uint32_t r0 = 0; r0 < T; r0 += chunk) {
      ChunkPlan c;
      c.stream = i;
      c.r0 = r0;
      c.Tk = std::min(T, r0 + chunk) - r0;
      c.target = std::max<uint32_t>(1, share(r0 + c.Tk) - share(r0));
      // Protected rows of the chunk: [0, sinks) ∪ [T − recent, T) intersected with it.
      for (uint32_t r = r0; r < r0 + c.Tk; ++r) c.prot += (r < sinks || r >= T - recent) ? 1 : 0;
      c.keepAll = c.target >= c.Tk;
      c.t = c.keepAll ? c.Tk : std::max(c.target, c.prot);
      c.f = c.t - c.prot;
      // n < t: the fits would chase the reference queries (chunk_compactor.cpp): keep the rows.
      c.fitBeta = o.fitBeta && c.f > 0 && !c.keepAll && n >= c.t;
      c.fitValues = o.fitValues && c.f > 0 && !c.keepAll && n >= c.t;
      // OMP refits after every step and overfits sooner: it needs n >= 2t, else the chunk
      // selects by highest attention (chunk_compactor.cpp).
      c.omp = !c.keepAll && o.method == compaction::Method::kOmp && n >= 2ull * c.target && c.prot < c.target;
      c.fitRow = s.tTotal;
      s.tTotal += c.t;
      const uint32_t Tk = c.Tk, t = c.t, f = c.f;
      auto stats = [&](uint32_t nq, uint32_t rows, StatsAt* st) {
        st->s = work.array<float>(static_cast<size_t>(nq) * rows);
        st->m = work.array<float>(nq);
        st->z = work.array<float>(nq);
        st->y = work.array<float>(static_cast<size_t>(nq) * D);
      };
      stats(n, Tk, &c.original);
      stats(n, t, &c.compacted);
      if (s.nh) {
        stats(s.nh, Tk, &c.heldOriginal);
        stats(s.nh, t, &c.heldCompacted);
      }
      c.colAcc = work.array<double>(Tk);
      c.raw = work.array<float>(Tk);
      c.pooled = work.array<float>(Tk);
      c.chosen = zero.array<uint8_t>(Tk);
      c.keep = out.array<int32_t>(t);
      c.counts = out.array<uint32_t>(2);
      c.raises = out.array<uint32_t>(2);
      c.lambdaValue = out.array<double>(1);
      c.freePos = work.array<int32_t>(t);
      c.protPos = work.array<int32_t>(t);
      c.keptKeys = work.array<float>(static_cast<size_t>(t) * D);
      c.keptBias = work.array<float>(t);
      if (c.fitBeta || c.fitValues) {
        c.lt = work.array<float>(static_cast<size_t>(t) * n);
        c.mt = work.array<float>(static_cast<size_t>(t) * n);
        c.free = work.array<float>(static_cast<size_t>(f) * n);
        c.gram = work.array<float>(static_cast<size_t>(f) * f);
        c.l = work.array<double>(static_cast<size_t>(f) * f);
      }
      if (c.fitBeta) {
        c.target_ = work.array<float>(n);
        c.h = work.array<float>(f);
        c.lambdaBeta = work.array<double>(1);
        c.w = work.array<double>(f);
        c.grad = work.array<double>(f);
      }
      if (c.fitValues) {
        c.rhs = work.array<float>(static_cast<size_t>(n) * D);
        c.r = work.array<float>(static_cast<size_t>(f) * D);
        c.c = work.array<double>(static_cast<size_t>(f) * D);
      }
      if (c.omp) {
        c.want = c.target - c.prot;
        c.step = std::max<uint32_t>(1, c.target / std::max<uint32_t>(1, o.ompStepDivisor));
        c.zpf = work.array<float>(n);
        c.residual = work.array<float>(n);
        c.corr = work.array<float>(Tk);
        c.score = work.array<float>(Tk);
        c.ompMt = work.array<float>(static_cast<size_t>(c.want) * n);
        c.ompG = work.array<double>(static_cast<size_t>(c.want) * c.want);
        c.ompH = work.array<double>(c.want);
        c.ompW = work.array<double>(c.want);
        c.ompGrad = work.array<double>(c.want);
        c.fresh = work.array<int32_t>(c.step);
        c.state = zero.array<uint32_t>(4);
        c.targetNorm = work.array<double>(1);
      }
      cp.push_back(c);
      ++s.chunks;
    }
    CudaCompactionFit::Stream& fs = fit->streams[first + i];
    fs.piece = piece;
    fs.rows = s.tTotal;
    fs.values = fitArena.array<float>(static_cast<size_t>(s.tTotal) * D);
    fs.beta = fitArena.array<float>(s.tTotal);
    fs.changed = fitArena.array<uint8_t>(s.tTotal);
  }
  const size_t outBytes = out.size(), zeroAt = outBytes, workAt = zeroAt + zero.size();
  const size_t keySignsAt = codec.keySigns ? staging.addArray(codec.keySigns, D) : SIZE_MAX;
  const size_t valueSignsAt = codec.valueSigns ? staging.addArray(codec.valueSigns, D) : SIZE_MAX;

  DeviceMemory mem;
  KVC_CC_TRY("cudaMalloc of the compaction workspace", mem.allocate(workAt + work.size()));
  KVC_CC_TRY("cudaMalloc of the compaction fit", fit->pieces[piece]->allocate(fitArena.size()));
  uint8_t* const fitBase = fit->pieces[piece]->get();
  auto W = [&](size_t off) { return mem.get() + workAt + off; };
  auto O = [&](size_t off) { return mem.get() + off; };
  auto Z = [&](size_t off) { return mem.get() + zeroAt + off; };
  auto F = [&](size_t off) { return fitBase + off; };
  auto f32 = [](uint8_t* p) { return reinterpret_cast<float*>(p); };

  // ---- launch arguments (device pointers; the arrays themselves are staged below) ----
  DeviceBuffer args;
  std::vector<DecodeStream> decode(count);
  std::vector<QueryJob> queryJobs;
  uint32_t maxT = 0, maxN = 0, maxQ = 0, maxTk = 0, maxF = 0;
  for (uint32_t i = 0; i < count; ++i) {
    StreamPlanDev& s = sp[i];
    DecodeStream& d = decode[i];
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
    queryJobs.push_back(q);
    if (s.nh) {
      QueryJob h;
      h.n = s.nh;
      h.out = f32(W(s.qh));
      h.rotate = 1;
      queryJobs.push_back(h);
    }
    maxN = std::max(maxN, s.T);
    maxQ = std::max({maxQ, s.n, s.nh});
  }
  // Query sources that live in the upload get their device address once `args` exists.
  std::vector<GemmProblem> gScores, gOutputs, gHeldScores, gHeldOutputs, gLogits, gBetaGram, gBetaH, gValGram, gValR,
      gDiagScores, gDiagOutputs, gHeldDiagScores, gHeldDiagOutputs;
  std::vector<SoftmaxJob> smOriginal, smHeld, smCompacted, smHeldCompacted;
  std::vector<ColumnJob> columns;
  std::vector<TopKJob> topk, ompTopK;
  std::vector<OmpJob> ompJobs;
  uint32_t ompIterations = 0;
  std::vector<FitJob> fitAll, fitBeta, fitValues;
  std::vector<CholeskyJob> cholBeta, cholValues;
  std::vector<SolveJob> solveBeta, solveValues;
  std::vector<NnlsJob> nnls;
  std::vector<ChangedJob> changed;
  uint32_t tilesScores = 0, tilesOut = 0, tilesHS = 0, tilesHO = 0, tilesLt = 0, tilesBG = 0, tilesBH = 0,
           tilesVG = 0, tilesVR = 0, tilesDS = 0, tilesDO = 0, tilesHDS = 0, tilesHDO = 0;
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
  for (ChunkPlan& c : cp) {
    const StreamPlanDev& s = sp[c.stream];
    const uint32_t n = s.n, Tk = c.Tk, t = c.t, f = c.f;
    const float* q = f32(W(s.q));
    const float* keys = f32(W(s.keys)) + static_cast<size_t>(c.r0) * D;
    const float* values = f32(W(s.values)) + static_cast<size_t>(c.r0) * D;
    const float* bias = f32(W(s.bias)) + c.r0;
    float* fitted = f32(F(fit->streams[first + c.stream].values)) + static_cast<size_t>(c.fitRow) * D;
    float* beta = f32(F(fit->streams[first + c.stream].beta)) + c.fitRow;
    maxT = std::max(maxT, t);
    maxTk = std::max(maxTk, Tk);
    maxF = std::max(maxF, f);
    // 1. attention statistics of the original rows
    gScores.push_back(gemmNT(q, keys, f32(W(c.original.s)), n, Tk, D));
    tilesScores = std::max(tilesScores, gemmTiles(n, Tk));
    smOriginal.push_back(softmax(c.original, n, Tk, bias));
    gOutputs.push_back(gemmNN(f32(W(c.original.s)), values, f32(W(c.original.y)), n, D, Tk));
    tilesOut = std::max(tilesOut, gemmTiles(n, D));
    if (!c.keepAll) {
      ColumnJob cj;
      cj.s = f32(W(c.original.s));
      cj.rows = n, cj.cols = Tk, cj.ld = Tk;
      cj.z = f32(W(c.original.z));
      // OMP: column norms of A (relative) or E (absolute); otherwise the attention squares.
      cj.mode = c.omp && !relative ? 1 : 0;
      cj.colAcc = reinterpret_cast<double*>(W(c.colAcc));
      columns.push_back(cj);
    }
    if (s.nh) {
      gHeldScores.push_back(gemmNT(f32(W(s.qh)), keys, f32(W(c.heldOriginal.s)), s.nh, Tk, D));
      tilesHS = std::max(tilesHS, gemmTiles(s.nh, Tk));
      smHeld.push_back(softmax(c.heldOriginal, s.nh, Tk, bias));
      gHeldOutputs.push_back(gemmNN(f32(W(c.heldOriginal.s)), values, f32(W(c.heldOriginal.y)), s.nh, D, Tk));
      tilesHO = std::max(tilesHO, gemmTiles(s.nh, D));
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
      ompJobs.push_back(oj);
      TopKJob sj;
      sj.scores = oj.score;
      sj.n = Tk;
      sj.kPtr = oj.state + 2;
      sj.chosen = oj.chosen;
      sj.picked = oj.fresh;
      sj.pickedCount = oj.state + 3;
      ompTopK.push_back(sj);
      ompIterations = std::max(ompIterations, (c.want + c.step - 1) / c.step);
    }
    topk.push_back(tj);
    // 3.-4. the fits
    FitJob fj;
    fj.n = n, fj.t = t, fj.f = f, fj.np = c.prot, fj.D = D;
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
      gLogits.push_back(gemmNT(fj.keptKeys, q, fj.lt, t, n, D));
      tilesLt = std::max(tilesLt, gemmTiles(t, n));
    }
    if (c.fitBeta) {
      fj.target = f32(W(c.target_));
      FitJob b = fj;
      fitBeta.push_back(b);
      gBetaGram.push_back(gemmNT(fj.free, fj.free, f32(W(c.gram)), f, f, n));
      tilesBG = std::max(tilesBG, gemmTiles(f, f));
      GemmProblem gh = gemmNT(fj.free, fj.target, f32(W(c.h)), f, 1, n);
      gBetaH.push_back(gh);
      tilesBH = std::max(tilesBH, gemmTiles(f, 1));
      CholeskyJob ch;
      ch.gram = f32(W(c.gram));
      ch.size = f;
      ch.l = reinterpret_cast<double*>(W(c.l));
      ch.lambda = reinterpret_cast<double*>(W(c.lambdaBeta));
      ch.raises = raises;
      ch.h = f32(W(c.h));
      ch.hr = reinterpret_cast<double*>(W(c.w));
      cholBeta.push_back(ch);
      SolveJob sj;
      sj.l = ch.l, sj.size = f, sj.b = ch.hr, sj.nrhs = 1, sj.lambda = ch.lambda;
      solveBeta.push_back(sj);
      NnlsJob nj;
      nj.gram = ch.gram, nj.h = ch.h, nj.l = ch.l, nj.lambda = ch.lambda, nj.f = f;
      nj.w = ch.hr;
      nj.grad = reinterpret_cast<double*>(W(c.grad));
      nj.freePos = fj.freePos;
      nj.keptBias = fj.keptBias;
      nj.beta = beta;
      nnls.push_back(nj);
    }
    if (c.fitValues) {
      fj.rhs = f32(W(c.rhs));
      fj.r = f32(W(c.r));
      fj.c = reinterpret_cast<double*>(W(c.c));
      fj.lambda = reinterpret_cast<const double*>(O(c.lambdaValue));
      fitValues.push_back(fj);
      gValGram.push_back(gemmNT(fj.free, fj.free, f32(W(c.gram)), f, f, n));
      tilesVG = std::max(tilesVG, gemmTiles(f, f));
      gValR.push_back(gemmNN(fj.free, fj.rhs, fj.r, f, D, n));
      tilesVR = std::max(tilesVR, gemmTiles(f, D));
      CholeskyJob ch;
      ch.gram = f32(W(c.gram));
      ch.size = f;
      ch.l = reinterpret_cast<double*>(W(c.l));
      ch.lambda = reinterpret_cast<double*>(O(c.lambdaValue));
      ch.raises = raises + 1;
      cholValues.push_back(ch);
      SolveJob sj;
      sj.l = ch.l, sj.size = f, sj.b = fj.c, sj.nrhs = D, sj.lambda = ch.lambda;
      solveValues.push_back(sj);
    }
    fitAll.push_back(fj);
    // 5. diagnostics: the compacted rows as attention will see them
    gDiagScores.push_back(gemmNT(q, fj.keptKeys, f32(W(c.compacted.s)), n, t, D));
    tilesDS = std::max(tilesDS, gemmTiles(n, t));
    smCompacted.push_back(softmax(c.compacted, n, t, beta));
    gDiagOutputs.push_back(gemmNN(f32(W(c.compacted.s)), fitted, f32(W(c.compacted.y)), n, D, t));
    tilesDO = std::max(tilesDO, gemmTiles(n, D));
    if (s.nh) {
      gHeldDiagScores.push_back(gemmNT(f32(W(s.qh)), fj.keptKeys, f32(W(c.heldCompacted.s)), s.nh, t, D));
      tilesHDS = std::max(tilesHDS, gemmTiles(s.nh, t));
      smHeldCompacted.push_back(softmax(c.heldCompacted, s.nh, t, beta));
      gHeldDiagOutputs.push_back(gemmNN(f32(W(c.heldCompacted.s)), fitted, f32(W(c.heldCompacted.y)), s.nh, D, t));
      tilesHDO = std::max(tilesHDO, gemmTiles(s.nh, D));
    }
    ChangedJob cj;
    cj.t = t;
    cj.keep = fj.keep;
    cj.values = values;
    cj.bias = bias;
    cj.fitted = fitted;
    cj.beta = beta;
    cj.changed = F(fit->streams[first + c.stream].changed) + c.fitRow;
    cj.count = reinterpret_cast<uint32_t*>(O(s.changedCount));
    changed.push_back(cj);
  }
  // Per-query statistics arrays for the error reduction, and the error jobs.
  std::vector<QueryStatsDev> statsRef, statsGot, statsHeldRef, statsHeldGot;
  auto dev = [&](const StatsAt& st) {
    QueryStatsDev q;
    q.m = f32(W(st.m));
    q.z = f32(W(st.z));
    q.y = f32(W(st.y));
    return q;
  };
  for (const ChunkPlan& c : cp) {
    statsRef.push_back(dev(c.original));
    statsGot.push_back(dev(c.compacted));
    if (sp[c.stream].nh) {
      statsHeldRef.push_back(dev(c.heldOriginal));
      statsHeldGot.push_back(dev(c.heldCompacted));
    }
  }
  const size_t aStatsRef = staging.addArray(statsRef.data(), statsRef.size());
  const size_t aStatsGot = staging.addArray(statsGot.data(), statsGot.size());
  const size_t aStatsHeldRef = staging.addArray(statsHeldRef.data(), statsHeldRef.size());
  const size_t aStatsHeldGot = staging.addArray(statsHeldGot.data(), statsHeldGot.size());
  const size_t aErrors = staging.add(nullptr, 2 * count * sizeof(ErrorJob));
  auto stage = [&](const auto& v) { return staging.addArray(v.data(), v.size()); };
  const size_t aDecode = stage(decode), aQueries = stage(queryJobs);
  const size_t aScores = stage(gScores), aOutputs = stage(gOutputs), aHS = stage(gHeldScores), aHO = stage(gHeldOutputs);
  const size_t aSmO = stage(smOriginal), aSmH = stage(smHeld), aSmC = stage(smCompacted), aSmHC = stage(smHeldCompacted);
  const size_t aOmp = stage(ompJobs), aOmpTopK = stage(ompTopK);
  const size_t aCols = stage(columns), aTopk = stage(topk), aFitAll = stage(fitAll), aFitBeta = stage(fitBeta),
               aFitValues = stage(fitValues);
  const size_t aLt = stage(gLogits), aBG = stage(gBetaGram), aBH = stage(gBetaH), aVG = stage(gValGram),
               aVR = stage(gValR), aDS = stage(gDiagScores), aDO = stage(gDiagOutputs), aHDS = stage(gHeldDiagScores),
               aHDO = stage(gHeldDiagOutputs);
  const size_t aCholB = stage(cholBeta), aCholV = stage(cholValues), aSolveB = stage(solveBeta),
               aSolveV = stage(solveValues), aNnls = stage(nnls), aChanged = stage(changed);
  KVC_CC_TRY("cudaMalloc of the compaction arguments", args.reserve(staging.size()));
  // Pointers into the upload itself, now that it has a device address.
  auto* decodeHost = reinterpret_cast<DecodeStream*>(staging.hostAt(aDecode));
  auto* queryHost = reinterpret_cast<QueryJob*>(staging.hostAt(aQueries));
  for (uint32_t i = 0, qj = 0; i < count; ++i) {
    decodeHost[i].blockTable = args.at<const int32_t>(tableAt[i]);
    if (!sp[i].fromKeys) queryHost[qj].src = args.at<const float>(sp[i].stagedQ);
    ++qj;
    if (sp[i].nh) queryHost[qj++].src = args.at<const float>(sp[i].stagedQh);
  }
  auto* errorHost = reinterpret_cast<ErrorJob*>(staging.hostAt(aErrors));
  uint32_t heldChunk = 0, heldJobs = 0;
  for (uint32_t i = 0; i < count; ++i) {
    ErrorJob& e = errorHost[i];
    e = ErrorJob();
    e.ref = args.at<const QueryStatsDev>(aStatsRef) + sp[i].chunk0;
    e.got = args.at<const QueryStatsDev>(aStatsGot) + sp[i].chunk0;
    e.chunks = sp[i].chunks;
    e.nq = sp[i].n;
    e.out = f32(O(sp[i].errors));
    ErrorJob& h = errorHost[count + heldJobs];
    h = ErrorJob();
    h.ref = args.at<const QueryStatsDev>(aStatsHeldRef) + heldChunk;
    h.got = args.at<const QueryStatsDev>(aStatsHeldGot) + heldChunk;
    h.chunks = sp[i].nh ? sp[i].chunks : 0;
    h.nq = sp[i].nh;
    h.out = f32(O(sp[i].errors)) + 2;
    ++heldJobs;
    if (sp[i].nh) heldChunk += sp[i].chunks;
  }
  KVC_CC_TRY("cudaMemcpy of the compaction arguments",
             cudaMemcpy(args.get(), staging.hostAt(0), staging.size(), cudaMemcpyHostToDevice));
  KVC_CC_TRY("cudaMemset of the compaction outputs", cudaMemsetAsync(mem.get(), 0, workAt, ctx.stream));

  RowCodec dc = codec;
  dc.keySigns = keySignsAt == SIZE_MAX ? nullptr : args.at<const float>(keySignsAt);
  dc.valueSigns = valueSignsAt == SIZE_MAX ? nullptr : args.at<const float>(valueSignsAt);
  const cudaStream_t st = ctx.stream;
  const uint32_t chunks = static_cast<uint32_t>(cp.size());
  auto A = [&](size_t off) { return args.at<const uint8_t>(off); };
  auto sync = [&](const char* what) -> Status {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cudaStatus(std::string("launch in ") + what, e);
    KVC_CC_TRY(std::string(what) + " kernels", cudaStreamSynchronize(st));
    if (cancelled()) return Status(StatusCode::kDisposed, "compaction cancelled; nothing was applied");
    return Status::ok();
  };
#define KVC_CC_LAUNCH(expr)                                            \
  do {                                                                 \
    const cudaError_t kvc_le_ = (expr);                                \
    if (kvc_le_ != cudaSuccess) return cudaStatus("launch", kvc_le_); \
  } while (0)
  auto gemm = [&](size_t at, const std::vector<GemmProblem>& v, uint32_t tiles) {
    return launchBatchedGemm(reinterpret_cast<const GemmProblem*>(A(at)), static_cast<uint32_t>(v.size()), tiles, st);
  };
  double tScores = secondsSince(tPlan), tSelect = 0, tNnls = 0, tValues = 0, tDiag = 0;

  // ---- 1. decode, queries, attention statistics ----
  auto t0 = std::chrono::steady_clock::now();
  DecodeArgs da;
  da.pool = pool;
  da.codec = dc;
  da.streams = reinterpret_cast<const DecodeStream*>(A(aDecode));
  da.count = count;
  KVC_CC_LAUNCH(launchDecodeRows(da, maxN, st));
  KVC_CC_LAUNCH(launchPrepareQueries(reinterpret_cast<const QueryJob*>(A(aQueries)), static_cast<uint32_t>(queryJobs.size()),
                                     maxQ, D, dc.keySigns, 1.0f / std::sqrt(static_cast<float>(D)), st));
  KVC_CC_LAUNCH(gemm(aScores, gScores, tilesScores));
  KVC_CC_LAUNCH(launchSoftmaxRows(reinterpret_cast<const SoftmaxJob*>(A(aSmO)), chunks, maxQ, st));
  KVC_CC_LAUNCH(gemm(aOutputs, gOutputs, tilesOut));
  KVC_CC_LAUNCH(launchNormalizeRows(reinterpret_cast<const SoftmaxJob*>(A(aSmO)), chunks, maxQ, D, st));
  KVC_CC_LAUNCH(launchColumnStats(reinterpret_cast<const ColumnJob*>(A(aCols)), static_cast<uint32_t>(columns.size()),
                                  maxTk, st));
  if (!gHeldScores.empty()) {
    const uint32_t hc = static_cast<uint32_t>(gHeldScores.size());
    KVC_CC_LAUNCH(gemm(aHS, gHeldScores, tilesHS));
    KVC_CC_LAUNCH(launchSoftmaxRows(reinterpret_cast<const SoftmaxJob*>(A(aSmH)), hc, maxQ, st));
    KVC_CC_LAUNCH(gemm(aHO, gHeldOutputs, tilesHO));
    KVC_CC_LAUNCH(launchNormalizeRows(reinterpret_cast<const SoftmaxJob*>(A(aSmH)), hc, maxQ, D, st));
  }
  KVC_RETURN_IF_ERROR(sync("score"));
  tScores += secondsSince(t0);

  // ---- 2. selection ----
  t0 = std::chrono::steady_clock::now();
  if (!ompJobs.empty()) {
    const OmpJob* jobs = reinterpret_cast<const OmpJob*>(A(aOmp));
    const uint32_t no = static_cast<uint32_t>(ompJobs.size());
    KVC_CC_LAUNCH(launchOmpInit(jobs, no, st));
    // As many steps as the longest chunk can need; finished chunks skip on the device.
    for (uint32_t it = 0; it < ompIterations; ++it)
      KVC_CC_LAUNCH(launchOmpStep(jobs, reinterpret_cast<const TopKJob*>(A(aOmpTopK)), no, maxTk, o.ompTolerance,
                                  o.minWeight, o.maxWeight, std::min(o.nnlsIterations, 8u), st));
    KVC_CC_LAUNCH(launchOmpFinish(jobs, no, st));
  }
  KVC_CC_LAUNCH(launchTopK(reinterpret_cast<const TopKJob*>(A(aTopk)), chunks, st));
  KVC_CC_LAUNCH(launchGatherKept(reinterpret_cast<const FitJob*>(A(aFitAll)), chunks, maxT, st));
  KVC_CC_LAUNCH(gemm(aLt, gLogits, tilesLt));
  KVC_RETURN_IF_ERROR(sync("selection"));
  tSelect += secondsSince(t0);

  // ---- 3. beta: NNLS on the attention mass ----
  t0 = std::chrono::steady_clock::now();
  if (!fitBeta.empty()) {
    const uint32_t nb = static_cast<uint32_t>(fitBeta.size());
    KVC_CC_LAUNCH(launchMassMatrix(reinterpret_cast<const FitJob*>(A(aFitBeta)), nb, maxQ, st));
    KVC_CC_LAUNCH(gemm(aBG, gBetaGram, tilesBG));
    KVC_CC_LAUNCH(gemm(aBH, gBetaH, tilesBH));
    KVC_CC_LAUNCH(launchCholeskyRidge(reinterpret_cast<const CholeskyJob*>(A(aCholB)), nb, o.ridge, st));
    KVC_CC_LAUNCH(launchCholeskySolve(reinterpret_cast<const SolveJob*>(A(aSolveB)), nb, 1, st));
    KVC_CC_LAUNCH(launchNnls(reinterpret_cast<const NnlsJob*>(A(aNnls)), nb, o.minWeight, o.maxWeight, o.nnlsIterations, st));
    KVC_RETURN_IF_ERROR(sync("beta fit"));
  }
  tNnls += secondsSince(t0);

  // ---- 4. values: ridge least squares against the original attention output ----
  t0 = std::chrono::steady_clock::now();
  if (!fitValues.empty()) {
    const uint32_t nv = static_cast<uint32_t>(fitValues.size());
    const FitJob* jobs = reinterpret_cast<const FitJob*>(A(aFitValues));
    KVC_CC_LAUNCH(launchValueSystem(jobs, nv, maxQ, D, st));
    KVC_CC_LAUNCH(gemm(aVG, gValGram, tilesVG));
    KVC_CC_LAUNCH(gemm(aVR, gValR, tilesVR));
    KVC_CC_LAUNCH(launchCholeskyRidge(reinterpret_cast<const CholeskyJob*>(A(aCholV)), nv, o.ridge, st));
    KVC_CC_LAUNCH(launchValueRhs(jobs, nv, maxF, D, st));
    KVC_CC_LAUNCH(launchCholeskySolve(reinterpret_cast<const SolveJob*>(A(aSolveV)), nv, D, st));
    KVC_CC_LAUNCH(launchValueStore(jobs, nv, maxF, D, st));
    KVC_RETURN_IF_ERROR(sync("value fit"));
  }
  tValues += secondsSince(t0);

  // ---- 5. diagnostics and changed rows ----
  t0 = std::chrono::steady_clock::now();
  KVC_CC_LAUNCH(gemm(aDS, gDiagScores, tilesDS));
  KVC_CC_LAUNCH(launchSoftmaxRows(reinterpret_cast<const SoftmaxJob*>(A(aSmC)), chunks, maxQ, st));
  KVC_CC_LAUNCH(gemm(aDO, gDiagOutputs, tilesDO));
  KVC_CC_LAUNCH(launchNormalizeRows(reinterpret_cast<const SoftmaxJob*>(A(aSmC)), chunks, maxQ, D, st));
  if (!gHeldDiagScores.empty()) {
    const uint32_t hc = static_cast<uint32_t>(gHeldDiagScores.size());
    KVC_CC_LAUNCH(gemm(aHDS, gHeldDiagScores, tilesHDS));
    KVC_CC_LAUNCH(launchSoftmaxRows(reinterpret_cast<const SoftmaxJob*>(A(aSmHC)), hc, maxQ, st));
    KVC_CC_LAUNCH(gemm(aHDO, gHeldDiagOutputs, tilesHDO));
    KVC_CC_LAUNCH(launchNormalizeRows(reinterpret_cast<const SoftmaxJob*>(A(aSmHC)), hc, maxQ, D, st));
  }
  KVC_CC_LAUNCH(launchErrors(reinterpret_cast<const ErrorJob*>(A(aErrors)), 2 * count, D, st));
  KVC_CC_LAUNCH(launchChangedRows(reinterpret_cast<const ChangedJob*>(A(aChanged)), chunks, maxT, D, st));
  KVC_RETURN_IF_ERROR(sync("diagnostics"));
#undef KVC_CC_LAUNCH

  // ---- 6. the only download: keep sets and per-stream numbers ----
  std::vector<uint8_t> host(out.used());
  KVC_CC_TRY("cudaMemcpy of the compaction reports", cudaMemcpy(host.data(), mem.get(), host.size(), cudaMemcpyDeviceToHost));
  tDiag += secondsSince(t0);
  for (uint32_t i = 0; i < count; ++i) {
    const StreamPlanDev& s = sp[i];
    CompactionStreamReport& r = reports[i];
    r = CompactionStreamReport();
    r.keep.reserve(s.tTotal);
    for (uint32_t k = s.chunk0; k < s.chunk0 + s.chunks; ++k) {
      const ChunkPlan& c = cp[k];
      const auto* keep = reinterpret_cast<const int32_t*>(host.data() + c.keep);
      for (uint32_t j = 0; j < c.t; ++j) r.keep.push_back(keep[j] + static_cast<int32_t>(c.r0));
      const auto* raises = reinterpret_cast<const uint32_t*>(host.data() + c.raises);
      r.ridgeRaises += raises[0] + raises[1];
      double lambda = 0;
      std::memcpy(&lambda, host.data() + c.lambdaValue, sizeof lambda);
      if (c.fitValues && !(lambda >= 0.0))
        return internalError("compaction of stream " + std::to_string(i) +
                             ": the value fit's Gram matrix is not positive definite even with ridge " +
                             std::to_string(o.ridge) + "·1e10 (non-finite keys, values or queries?)");
    }
    const auto* errors = reinterpret_cast<const float*>(host.data() + s.errors);
    r.outputError = errors[0];
    r.massError = errors[1];
    r.heldOutOutputError = s.nh ? errors[2] : std::numeric_limits<float>::quiet_NaN();
    r.heldOutMassError = s.nh ? errors[3] : std::numeric_limits<float>::quiet_NaN();
    std::memcpy(&r.changedRows, host.data() + s.changedCount, 4);
    r.queryCount = s.n;
    r.queriesFromKeys = s.fromKeys;
    // One batch serves every stream at once: each stream reports an equal share of its time.
    r.secondsScores = tScores / count;
    r.secondsSelect = tSelect / count;
    r.secondsNnls = tNnls / count;
    r.secondsValues = tValues / count;
    r.secondsDiagnostics = tDiag / count;
  }
  return Status::ok();
}

}  // namespace

Status compactStreamsOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                              const CompactionStreamInput* streams, uint32_t count, const compaction::Options& o,
                              const CompactionControl& control, CompactionStreamReport* reports,
                              std::unique_ptr<CompactionFit>* fitOut) {
  if (!reports || !fitOut) return invalidArgument("compactStreams: reports and fit are required");
  KVC_RETURN_IF_ERROR(validateInputs(streams, count, o, codec, ctx.committedBlocks));
  auto fit = std::make_unique<CudaCompactionFit>();
  fit->headDim = codec.headDim;
  fit->streams.resize(count);
  // Consecutive streams share a device batch while their workspace fits the budget (most of
  // the free device memory); a stream that alone exceeds it still runs, as its own batch.
  uint64_t budget = ctx.workspaceLimit;
  if (budget == 0) {
    size_t freeBytes = 0, totalBytes = 0;
    KVC_CC_TRY("cudaMemGetInfo", cudaMemGetInfo(&freeBytes, &totalBytes));
    budget = freeBytes / 10 * 6;
  }
  for (uint32_t begin = 0; begin < count;) {
    uint32_t end = begin;
    uint64_t bytes = 0;
    while (end < count) {
      const uint64_t more = workspaceEstimate(streams[end], o, codec.headDim);
      if (end > begin && bytes + more > budget) break;
      bytes += more;
      ++end;
    }
    KVC_RETURN_IF_ERROR(
        compactDeviceBatch(ctx, pool, codec, streams + begin, end - begin, o, control, reports + begin, fit.get(), begin));
    begin = end;
  }
  *fitOut = std::move(fit);
  return Status::ok();
}

Status applyCompactionFitOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                                  const CompactionFit& fitBase, const uint32_t index, const StreamView& rebuilt) {
  const auto* fit = dynamic_cast<const CudaCompactionFit*>(&fitBase);
  if (!fit) return invalidArgument("applyCompactionFit: the fit was not made by the CUDA backend");
  if (index >= fit->streams.size())
    return invalidArgument("applyCompactionFit: index " + std::to_string(index) + " is outside the batch of " +
                           std::to_string(fit->streams.size()));
  if (fit->headDim != codec.headDim) return shapeMismatch("applyCompactionFit: the codec's headDim differs from the fit's");
  const CudaCompactionFit::Stream& s = fit->streams[index];
  if (rebuilt.length < 0 || static_cast<uint32_t>(rebuilt.length) != s.rows)
    return shapeMismatch("applyCompactionFit: the rebuilt stream has " + std::to_string(rebuilt.length) +
                         " rows, the fit " + std::to_string(s.rows));
  if (s.rows == 0) return Status::ok();
  if (!rebuilt.blockTable) return invalidArgument("applyCompactionFit: block table is null");
  const uint32_t blocks = (s.rows + pool.layout.blockSize - 1) / pool.layout.blockSize;
  KVC_RETURN_IF_ERROR(checkTable(rebuilt.blockTable, blocks, ctx.committedBlocks, "applyCompactionFit"));
  StagingBuffer staging;
  const size_t aTable = staging.addArray(rebuilt.blockTable, blocks);
  const size_t aSigns = codec.valueSigns ? staging.addArray(codec.valueSigns, codec.headDim) : SIZE_MAX;
  DeviceBuffer args;
  KVC_CC_TRY("cudaMalloc of the apply arguments", args.reserve(staging.size()));
  KVC_CC_TRY("cudaMemcpy of the apply arguments",
             cudaMemcpy(args.get(), staging.hostAt(0), staging.size(), cudaMemcpyHostToDevice));
  ApplyFitArgs a;
  a.pool = pool;
  a.codec = codec;
  a.codec.keySigns = nullptr;
  a.codec.valueSigns = aSigns == SIZE_MAX ? nullptr : args.at<const float>(aSigns);
  a.blockTable = args.at<const int32_t>(aTable);
  a.count = s.rows;
  a.values = fit->memory(s).at<const float>(s.values);
  a.beta = fit->memory(s).at<const float>(s.beta);
  a.changed = fit->memory(s).at<const uint8_t>(s.changed);
  const cudaError_t e = launchApplyFit(a, ctx.stream);
  if (e != cudaSuccess) return cudaStatus("launch of applyFit", e);
  KVC_CC_TRY("applyFit kernel", cudaStreamSynchronize(ctx.stream));
  return Status::ok();
}

Status readCompactionFit(const CompactionFit& fitBase, uint32_t index, std::vector<float>* values,
                         std::vector<float>* beta) {
  const auto* fit = dynamic_cast<const CudaCompactionFit*>(&fitBase);
  if (!fit || index >= fit->streams.size()) return invalidArgument("readCompactionFit: no such stream in this fit");
  const CudaCompactionFit::Stream& s = fit->streams[index];
  values->resize(static_cast<size_t>(s.rows) * fit->headDim);
  beta->resize(s.rows);
  KVC_CC_TRY("cudaMemcpy of fitted values",
             cudaMemcpy(values->data(), fit->memory(s).at<const float>(s.values), values->size() * 4, cudaMemcpyDeviceToHost));
  KVC_CC_TRY("cudaMemcpy of fitted beta",
             cudaMemcpy(beta->data(), fit->memory(s).at<const float>(s.beta), beta->size() * 4, cudaMemcpyDeviceToHost));
  return Status::ok();
}

KVC_CUDA_NAMESPACE_END
