// See cuda_compaction.h. One compactStreams call: plan every chunk of every stream on the host
// (all sizes are known before any kernel runs: t = target, f = t − |protected|), lay out one
// device workspace, upload the queries and the launch arguments in one copy, run the kernel
// sequence (decode, scores, top-k, beta fit, value fit, diagnostics) and download only the
// keep sets and the per-stream numbers. The fitted rows stay in a CudaCompactionFit
// (compaction_fit.h), which cuda_compaction_apply.cu writes into the pool.
#include "cuda_compaction.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "../kernels/compaction/compaction_args.h"
#include "compaction_batch.h"
#include "compaction_fit.h"
#include "device_memory.h"
#include "staging.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

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
  // Keys and queries are D wide; value rows, outputs and the value fit VD (valueWidth: another
  // rank than the keys' in low-rank caches, as the CPU's value fit is the value rows' own width).
  const uint32_t D = codec.headDim, VD = valueWidth(codec);
  auto cancelled = [&]() { return control.cancel && control.cancel->load(std::memory_order_relaxed); };
  const uint32_t piece = static_cast<uint32_t>(fit->pieces.size());
  fit->pieces.emplace_back(new DeviceMemory());
  const auto tPlan = std::chrono::steady_clock::now();

  // ---- plan: sizes and offsets ----
  BatchPlan plan;
  KVC_RETURN_IF_ERROR(planBatch(ctx, pool, codec, streams, count, o, fit, first, piece, &plan));
  auto& sp = plan.sp;
  auto& cp = plan.cp;
  auto& staging = plan.staging;
  auto& tableAt = plan.tableAt;
  const Arena& out = plan.out;
  const size_t keySignsAt = plan.keySignsAt, valueSignsAt = plan.valueSignsAt;
  const size_t outBytes = out.size(), zeroAt = outBytes, workAt = zeroAt + plan.zero.size();

  DeviceMemory mem;
  KVC_CC_TRY("cudaMalloc of the compaction workspace", mem.allocate(workAt + plan.work.size()));
  KVC_CC_TRY("cudaMalloc of the compaction fit", fit->pieces[piece]->allocate(plan.fitArena.size()));
  uint8_t* const fitBase = fit->pieces[piece]->get();
  auto O = [&](size_t off) { return mem.get() + off; };
  auto f32 = [](uint8_t* p) { return reinterpret_cast<float*>(p); };

  // ---- launch arguments (device pointers; the arrays themselves are staged below) ----
  DeviceBuffer args;
  BatchJobs J;
  Bases bases;
  bases.mem = mem.get();
  bases.zeroAt = zeroAt;
  bases.workAt = workAt;
  bases.fit = fitBase;
  buildJobs(plan, bases, streams, count, o, D, VD, *fit, first, &J);
  const size_t aStatsRef = staging.addArray(J.statsRef.data(), J.statsRef.size());
  const size_t aStatsGot = staging.addArray(J.statsGot.data(), J.statsGot.size());
  const size_t aStatsHeldRef = staging.addArray(J.statsHeldRef.data(), J.statsHeldRef.size());
  const size_t aStatsHeldGot = staging.addArray(J.statsHeldGot.data(), J.statsHeldGot.size());
  const size_t aErrors = staging.add(nullptr, 2 * count * sizeof(ErrorJob));
  auto stage = [&](const auto& v) { return staging.addArray(v.data(), v.size()); };
  const size_t aDecode = stage(J.decode), aQueries = stage(J.queryJobs);
  const size_t aScores = stage(J.gScores), aOutputs = stage(J.gOutputs), aHS = stage(J.gHeldScores), aHO = stage(J.gHeldOutputs);
  const size_t aSmO = stage(J.smOriginal), aSmH = stage(J.smHeld), aSmC = stage(J.smCompacted), aSmHC = stage(J.smHeldCompacted);
  const size_t aOmp = stage(J.ompJobs), aOmpTopK = stage(J.ompTopK);
  const size_t aCols = stage(J.columns), aTopk = stage(J.topk), aFitAll = stage(J.fitAll), aFitBeta = stage(J.fitBeta),
               aFitValues = stage(J.fitValues);
  const size_t aLt = stage(J.gLogits), aBG = stage(J.gBetaGram), aBH = stage(J.gBetaH), aVG = stage(J.gValGram),
               aVR = stage(J.gValR), aDS = stage(J.gDiagScores), aDO = stage(J.gDiagOutputs), aHDS = stage(J.gHeldDiagScores),
               aHDO = stage(J.gHeldDiagOutputs);
  const size_t aCholB = stage(J.cholBeta), aCholV = stage(J.cholValues), aSolveB = stage(J.solveBeta),
               aSolveV = stage(J.solveValues), aNnls = stage(J.nnls), aChanged = stage(J.changed);
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
  KVC_CC_LAUNCH(launchDecodeRows(da, J.maxRows, st));
  KVC_CC_LAUNCH(launchPrepareQueries(reinterpret_cast<const QueryJob*>(A(aQueries)), static_cast<uint32_t>(J.queryJobs.size()),
                                     J.maxQ, D, dc.keySigns, 1.0f / std::sqrt(static_cast<float>(D)), st));
  KVC_CC_LAUNCH(gemm(aScores, J.gScores, J.tilesScores));
  KVC_CC_LAUNCH(launchSoftmaxRows(reinterpret_cast<const SoftmaxJob*>(A(aSmO)), chunks, J.maxQ, st));
  KVC_CC_LAUNCH(gemm(aOutputs, J.gOutputs, J.tilesOut));
  KVC_CC_LAUNCH(launchNormalizeRows(reinterpret_cast<const SoftmaxJob*>(A(aSmO)), chunks, J.maxQ, VD, st));
  KVC_CC_LAUNCH(launchColumnStats(reinterpret_cast<const ColumnJob*>(A(aCols)), static_cast<uint32_t>(J.columns.size()),
                                  J.maxTk, st));
  if (!J.gHeldScores.empty()) {
    const uint32_t hc = static_cast<uint32_t>(J.gHeldScores.size());
    KVC_CC_LAUNCH(gemm(aHS, J.gHeldScores, J.tilesHS));
    KVC_CC_LAUNCH(launchSoftmaxRows(reinterpret_cast<const SoftmaxJob*>(A(aSmH)), hc, J.maxQ, st));
    KVC_CC_LAUNCH(gemm(aHO, J.gHeldOutputs, J.tilesHO));
    KVC_CC_LAUNCH(launchNormalizeRows(reinterpret_cast<const SoftmaxJob*>(A(aSmH)), hc, J.maxQ, VD, st));
  }
  KVC_RETURN_IF_ERROR(sync("score"));
  tScores += secondsSince(t0);

  // ---- 2. selection ----
  t0 = std::chrono::steady_clock::now();
  if (!J.ompJobs.empty()) {
    const OmpJob* jobs = reinterpret_cast<const OmpJob*>(A(aOmp));
    const uint32_t no = static_cast<uint32_t>(J.ompJobs.size());
    KVC_CC_LAUNCH(launchOmpInit(jobs, no, st));
    // As many steps as the longest chunk can need; finished chunks skip on the device.
    for (uint32_t it = 0; it < J.ompIterations; ++it)
      KVC_CC_LAUNCH(launchOmpStep(jobs, reinterpret_cast<const TopKJob*>(A(aOmpTopK)), no, J.maxTk, o.ompTolerance,
                                  o.minWeight, o.maxWeight, std::min(o.nnlsIterations, 8u), st));
    KVC_CC_LAUNCH(launchOmpFinish(jobs, no, st));
  }
  KVC_CC_LAUNCH(launchTopK(reinterpret_cast<const TopKJob*>(A(aTopk)), chunks, st));
  KVC_CC_LAUNCH(launchGatherKept(reinterpret_cast<const FitJob*>(A(aFitAll)), chunks, J.maxT, st));
  KVC_CC_LAUNCH(gemm(aLt, J.gLogits, J.tilesLt));
  KVC_RETURN_IF_ERROR(sync("selection"));
  tSelect += secondsSince(t0);

  // ---- 3. beta: NNLS on the attention mass ----
  t0 = std::chrono::steady_clock::now();
  if (!J.fitBeta.empty()) {
    const uint32_t nb = static_cast<uint32_t>(J.fitBeta.size());
    KVC_CC_LAUNCH(launchMassMatrix(reinterpret_cast<const FitJob*>(A(aFitBeta)), nb, J.maxQ, st));
    KVC_CC_LAUNCH(gemm(aBG, J.gBetaGram, J.tilesBG));
    KVC_CC_LAUNCH(gemm(aBH, J.gBetaH, J.tilesBH));
    KVC_CC_LAUNCH(launchCholeskyRidge(reinterpret_cast<const CholeskyJob*>(A(aCholB)), nb, o.ridge, st));
    KVC_CC_LAUNCH(launchCholeskySolve(reinterpret_cast<const SolveJob*>(A(aSolveB)), nb, 1, st));
    KVC_CC_LAUNCH(launchNnls(reinterpret_cast<const NnlsJob*>(A(aNnls)), nb, o.minWeight, o.maxWeight, o.nnlsIterations, st));
    KVC_RETURN_IF_ERROR(sync("beta fit"));
  }
  tNnls += secondsSince(t0);

  // ---- 4. values: ridge least squares against the original attention output ----
  t0 = std::chrono::steady_clock::now();
  if (!J.fitValues.empty()) {
    const uint32_t nv = static_cast<uint32_t>(J.fitValues.size());
    const FitJob* jobs = reinterpret_cast<const FitJob*>(A(aFitValues));
    KVC_CC_LAUNCH(launchValueSystem(jobs, nv, J.maxQ, VD, st));
    KVC_CC_LAUNCH(gemm(aVG, J.gValGram, J.tilesVG));
    KVC_CC_LAUNCH(gemm(aVR, J.gValR, J.tilesVR));
    KVC_CC_LAUNCH(launchCholeskyRidge(reinterpret_cast<const CholeskyJob*>(A(aCholV)), nv, o.ridge, st));
    KVC_CC_LAUNCH(launchValueRhs(jobs, nv, J.maxF, VD, st));
    KVC_CC_LAUNCH(launchCholeskySolve(reinterpret_cast<const SolveJob*>(A(aSolveV)), nv, VD, st));
    KVC_CC_LAUNCH(launchValueStore(jobs, nv, J.maxF, VD, st));
    KVC_RETURN_IF_ERROR(sync("value fit"));
  }
  tValues += secondsSince(t0);

  // ---- 5. diagnostics and changed rows ----
  t0 = std::chrono::steady_clock::now();
  KVC_CC_LAUNCH(gemm(aDS, J.gDiagScores, J.tilesDS));
  KVC_CC_LAUNCH(launchSoftmaxRows(reinterpret_cast<const SoftmaxJob*>(A(aSmC)), chunks, J.maxQ, st));
  KVC_CC_LAUNCH(gemm(aDO, J.gDiagOutputs, J.tilesDO));
  KVC_CC_LAUNCH(launchNormalizeRows(reinterpret_cast<const SoftmaxJob*>(A(aSmC)), chunks, J.maxQ, VD, st));
  if (!J.gHeldDiagScores.empty()) {
    const uint32_t hc = static_cast<uint32_t>(J.gHeldDiagScores.size());
    KVC_CC_LAUNCH(gemm(aHDS, J.gHeldDiagScores, J.tilesHDS));
    KVC_CC_LAUNCH(launchSoftmaxRows(reinterpret_cast<const SoftmaxJob*>(A(aSmHC)), hc, J.maxQ, st));
    KVC_CC_LAUNCH(gemm(aHDO, J.gHeldDiagOutputs, J.tilesHDO));
    KVC_CC_LAUNCH(launchNormalizeRows(reinterpret_cast<const SoftmaxJob*>(A(aSmHC)), hc, J.maxQ, VD, st));
  }
  KVC_CC_LAUNCH(launchErrors(reinterpret_cast<const ErrorJob*>(A(aErrors)), 2 * count, VD, st));
  KVC_CC_LAUNCH(launchChangedRows(reinterpret_cast<const ChangedJob*>(A(aChanged)), chunks, J.maxT, VD, st));
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
  fit->valueDim = valueWidth(codec);
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
      const uint64_t more = workspaceEstimate(streams[end], o, std::max(codec.headDim, valueWidth(codec)));
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

KVC_CUDA_NAMESPACE_END
