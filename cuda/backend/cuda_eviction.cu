// Eviction numerics of the CUDA backend (Backend::rowScores, selectRows; ARCHITECTURE §4.3):
// per-row scores computed where the keys live (key norm; mean attention of recorded queries,
// max-pooled), or given by the caller, and the keep sets chosen on the device by the top-k of
// the compaction kernels with the CPU's selection rule (cpu::selectTopK: −0 below +0, NaN
// lowest, equal -> lower index; protected rows first, capped by the budget as evict.cpp does).
// What comes back: 4 bytes per row (scores) or per kept row (keep sets).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "../kernels/compaction/compaction_args.h"
#include "cuda_compaction.h"
#include "device_memory.h"
#include "staging.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

struct ScorePlan {
  uint32_t T = 0, n = 0;
  size_t keys = 0, bias = 0, q = 0, s = 0, m = 0, z = 0, y = 0, colAcc = 0, scores = 0;
  size_t stagedTable = 0, stagedQueries = SIZE_MAX, stagedGiven = SIZE_MAX;
};

// Scores of every stream into device arrays (scores at mem + plan[i].scores). `extra` lets the
// caller plan more workspace before the one allocation.
class ScorePass {
 public:
  Status run(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec, const RowScoreInput* in,
             uint32_t count, const std::function<void(Arena&, StagingBuffer&)>& extra,
             const std::function<Status(DeviceMemory&, DeviceBuffer&)>& after) {
    const uint32_t D = codec.headDim, bs = pool.layout.blockSize;
    plan.assign(count, ScorePlan());
    for (uint32_t i = 0; i < count; ++i) {
      const RowScoreInput& r = in[i];
      ScorePlan& p = plan[i];
      const std::string at = "stream " + std::to_string(i) + ": ";
      if (r.stream.length < 0 || (r.stream.length > 0 && !r.stream.blockTable))
        return invalidArgument(at + "needs a block table for its rows");
      p.T = static_cast<uint32_t>(r.stream.length);
      const uint32_t blocks = (p.T + bs - 1) / bs;
      for (uint32_t b = 0; b < blocks; ++b)
        if (r.stream.blockTable[b] < 0 || static_cast<uint64_t>(r.stream.blockTable[b]) >= ctx.committedBlocks)
          return invalidArgument(at + "block id " + std::to_string(r.stream.blockTable[b]) + " is outside the committed pool");
      p.stagedTable = staging.addArray(r.stream.blockTable, blocks);
      p.scores = work.array<float>(p.T);
      switch (r.kind) {
        case RowScoreKind::kGiven:
          if (!r.given && p.T) return invalidArgument(at + "kGiven needs given scores");
          p.stagedGiven = staging.addArray(r.given, p.T);
          break;
        case RowScoreKind::kKeyNorm:
          p.keys = work.array<float>(static_cast<size_t>(p.T) * D);
          break;
        case RowScoreKind::kMeanAttention:
          if (!r.queries || r.nQueries == 0) return invalidArgument(at + "kMeanAttention needs recorded queries");
          if (r.pool == 0 || r.pool % 2 == 0) return invalidArgument(at + "pool must be an odd kernel >= 1");
          p.n = r.nQueries;
          p.keys = work.array<float>(static_cast<size_t>(p.T) * D);
          p.bias = work.array<float>(p.T);
          p.q = work.array<float>(static_cast<size_t>(p.n) * D);
          p.s = work.array<float>(static_cast<size_t>(p.n) * p.T);
          p.m = work.array<float>(p.n);
          p.z = work.array<float>(p.n);
          p.y = work.array<float>(static_cast<size_t>(p.n) * D);
          p.colAcc = work.array<double>(p.T);
          p.stagedQueries = staging.addArray(r.queries, static_cast<size_t>(p.n) * D);
          break;
      }
    }
    extra(work, staging);
    KVC_CC_TRY("cudaMalloc of the eviction workspace", mem.allocate(work.size()));
    auto W = [&](size_t off) { return mem.get() + off; };
    auto f32 = [&](size_t off) { return reinterpret_cast<float*>(W(off)); };
    std::vector<DecodeStream> decode;
    std::vector<QueryJob> queries;
    std::vector<GemmProblem> gemms;
    std::vector<SoftmaxJob> softmax;
    std::vector<ColumnJob> columns;
    std::vector<RowScoreJob> scoreJobs;
    std::vector<size_t> decodeTables, queryStaged;
    uint32_t maxT = 0, maxN = 0, tiles = 0;
    for (uint32_t i = 0; i < count; ++i) {
      const ScorePlan& p = plan[i];
      if (in[i].kind == RowScoreKind::kGiven || p.T == 0) continue;
      maxT = std::max(maxT, p.T);
      DecodeStream d;
      d.length = p.T;
      d.keys = f32(p.keys);
      if (p.bias) d.bias = f32(p.bias);
      decode.push_back(d);
      decodeTables.push_back(p.stagedTable);
      RowScoreJob sj;
      sj.rows = p.T;
      sj.keys = f32(p.keys);
      sj.scores = f32(p.scores);
      if (in[i].kind == RowScoreKind::kKeyNorm) {
        sj.kind = 1;
      } else {
        sj.kind = 2;
        sj.colAcc = reinterpret_cast<const double*>(W(p.colAcc));
        sj.queries = p.n;
        sj.pool = in[i].pool;
        sj.poolSplit = in[i].poolSplit;
        QueryJob q;
        q.n = p.n;
        q.out = f32(p.q);
        queries.push_back(q);
        queryStaged.push_back(p.stagedQueries);
        GemmProblem g;
        g.a = f32(p.q), g.b = f32(p.keys), g.c = f32(p.s);
        g.M = p.n, g.N = p.T, g.K = D, g.as0 = D, g.as1 = 1, g.bs0 = 1, g.bs1 = D, g.ldc = p.T;
        gemms.push_back(g);
        tiles = std::max(tiles, ((p.n + kGemmTile - 1) / kGemmTile) * ((p.T + kGemmTile - 1) / kGemmTile));
        SoftmaxJob sm;
        sm.s = f32(p.s), sm.rows = p.n, sm.cols = p.T, sm.ld = p.T, sm.bias = f32(p.bias);
        sm.m = f32(p.m), sm.z = f32(p.z), sm.y = f32(p.y);
        softmax.push_back(sm);
        ColumnJob cj;
        cj.s = f32(p.s), cj.rows = p.n, cj.cols = p.T, cj.ld = p.T, cj.z = f32(p.z), cj.mode = 2;
        cj.colAcc = reinterpret_cast<double*>(W(p.colAcc));
        columns.push_back(cj);
        maxN = std::max(maxN, p.n);
      }
      scoreJobs.push_back(sj);
    }
    const size_t aDecode = staging.addArray(decode.data(), decode.size());
    const size_t aQueries = staging.addArray(queries.data(), queries.size());
    const size_t aGemm = staging.addArray(gemms.data(), gemms.size());
    const size_t aSoftmax = staging.addArray(softmax.data(), softmax.size());
    const size_t aColumns = staging.addArray(columns.data(), columns.size());
    const size_t aScores = staging.addArray(scoreJobs.data(), scoreJobs.size());
    const size_t aSigns = codec.keySigns ? staging.addArray(codec.keySigns, D) : SIZE_MAX;
    KVC_CC_TRY("cudaMalloc of the eviction arguments", args.reserve(staging.size()));
    auto* decodeHost = reinterpret_cast<DecodeStream*>(staging.hostAt(aDecode));
    for (size_t k = 0; k < decode.size(); ++k) decodeHost[k].blockTable = args.at<const int32_t>(decodeTables[k]);
    auto* queryHost = reinterpret_cast<QueryJob*>(staging.hostAt(aQueries));
    for (size_t k = 0; k < queries.size(); ++k) queryHost[k].src = args.at<const float>(queryStaged[k]);
    KVC_CC_TRY("cudaMemcpy of the eviction arguments",
               cudaMemcpy(args.get(), staging.hostAt(0), staging.size(), cudaMemcpyHostToDevice));
    // Given scores: a device-to-device copy of the uploaded array.
    for (uint32_t i = 0; i < count; ++i)
      if (plan[i].stagedGiven != SIZE_MAX && plan[i].T)
        KVC_CC_TRY("cudaMemcpy of given scores", cudaMemcpy(W(plan[i].scores), args.at<const uint8_t>(plan[i].stagedGiven),
                                                            4ull * plan[i].T, cudaMemcpyDeviceToDevice));
    const cudaStream_t st = ctx.stream;
    DecodeArgs da;
    da.pool = pool;
    da.codec = codec;
    da.codec.keySigns = aSigns == SIZE_MAX ? nullptr : args.at<const float>(aSigns);
    da.codec.valueSigns = nullptr;
    da.streams = args.at<const DecodeStream>(aDecode);
    da.count = static_cast<uint32_t>(decode.size());
    // Keys in the original space, as the CPU's scores read them (readRows).
    da.keysOriginal = 1;
    cudaError_t e = launchDecodeRows(da, maxT, st);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    if (e == cudaSuccess)
      e = launchPrepareQueries(args.at<const QueryJob>(aQueries), static_cast<uint32_t>(queries.size()), maxN, D, nullptr,
                               scale, st);
    if (e == cudaSuccess) e = launchBatchedGemm(args.at<const GemmProblem>(aGemm), static_cast<uint32_t>(gemms.size()), tiles, st);
    if (e == cudaSuccess) e = launchSoftmaxRows(args.at<const SoftmaxJob>(aSoftmax), static_cast<uint32_t>(softmax.size()), maxN, st);
    if (e == cudaSuccess) e = launchColumnStats(args.at<const ColumnJob>(aColumns), static_cast<uint32_t>(columns.size()), maxT, st);
    if (e == cudaSuccess) e = launchRowScores(args.at<const RowScoreJob>(aScores), static_cast<uint32_t>(scoreJobs.size()), maxT, D, st);
    if (e != cudaSuccess) return cudaStatus("launch of the eviction score kernels", e);
    KVC_RETURN_IF_ERROR(after(mem, args));
    KVC_CC_TRY("eviction kernels", cudaStreamSynchronize(st));
    return Status::ok();
  }

  std::vector<ScorePlan> plan;
  Arena work;
  StagingBuffer staging;
  DeviceMemory mem;
  DeviceBuffer args;
};

}  // namespace

Status rowScoresOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                         const RowScoreInput* streams, uint32_t count, float* const* scores) {
  if (count == 0) return Status::ok();
  if (!streams || !scores) return invalidArgument("rowScores: streams and scores are required");
  ScorePass pass;
  KVC_RETURN_IF_ERROR(pass.run(ctx, pool, codec, streams, count, [](Arena&, StagingBuffer&) {},
                               [](DeviceMemory&, DeviceBuffer&) { return Status::ok(); }));
  // The scores are contiguous in the workspace only per stream: one copy each (4 bytes per row).
  for (uint32_t i = 0; i < count; ++i) {
    if (!pass.plan[i].T) continue;
    if (!scores[i]) return invalidArgument("rowScores: scores[" + std::to_string(i) + "] is null");
    KVC_CC_TRY("cudaMemcpy of row scores", cudaMemcpy(scores[i], pass.mem.at<const float>(pass.plan[i].scores),
                                                      4ull * pass.plan[i].T, cudaMemcpyDeviceToHost));
  }
  return Status::ok();
}

Status selectRowsOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                          const RowSelectInput* streams, uint32_t count, std::vector<int32_t>* keep) {
  if (count == 0) return Status::ok();
  if (!streams || !keep) return invalidArgument("selectRows: streams and keep are required");
  std::vector<RowScoreInput> inputs(count);
  for (uint32_t i = 0; i < count; ++i) inputs[i] = streams[i].score;
  // Protected rows as evict.cpp marks them: the first `sinks`, then the newest of the last
  // `recent`, never more than the budget; they seed the chosen flags of the top-k.
  std::vector<uint32_t> budget(count), forced(count);
  std::vector<size_t> chosenAt(count), keepAt(count), countAt(count), stagedChosen(count);
  ScorePass pass;
  auto plan = [&](Arena& work, StagingBuffer& staging) {
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t n = static_cast<uint32_t>(std::max(0, streams[i].score.stream.length));
      budget[i] = std::min(streams[i].keep, n);
      std::vector<uint8_t> selected(n, 0);
      uint32_t marked = 0;
      for (uint32_t r = 0; r < std::min(streams[i].sinks, n) && marked < budget[i]; ++r, ++marked) selected[r] = 1;
      for (uint32_t q = 0; q < std::min(streams[i].recent, n) && marked < budget[i]; ++q) {
        const uint32_t r = n - 1 - q;
        if (!selected[r]) selected[r] = 1, ++marked;
      }
      forced[i] = marked;
      stagedChosen[i] = staging.addArray(selected.data(), n);
      chosenAt[i] = work.array<uint8_t>(n);
      keepAt[i] = work.array<int32_t>(budget[i]);
      countAt[i] = work.array<uint32_t>(2);
    }
  };
  auto select = [&](DeviceMemory& mem, DeviceBuffer& args) -> Status {
    std::vector<TopKJob> jobs(count);
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t n = pass.plan[i].T;
      if (n) KVC_CC_TRY("cudaMemcpy of protected rows", cudaMemcpy(mem.at<uint8_t>(chosenAt[i]), args.at<const uint8_t>(stagedChosen[i]),
                                                                   n, cudaMemcpyDeviceToDevice));
      TopKJob& j = jobs[i];
      j.scores = mem.at<const float>(pass.plan[i].scores);
      j.n = n;
      j.k = budget[i] - forced[i];
      j.canonicalZero = 0;  // orderedScoreKey: −0 ranks below +0
      j.chosen = mem.at<uint8_t>(chosenAt[i]);
      j.keep = mem.at<int32_t>(keepAt[i]);
      j.counts = mem.at<uint32_t>(countAt[i]);
    }
    DeviceMemory jobMem;
    KVC_CC_TRY("cudaMalloc of the top-k jobs", jobMem.allocate(jobs.size() * sizeof(TopKJob)));
    KVC_CC_TRY("cudaMemcpy of the top-k jobs",
               cudaMemcpy(jobMem.get(), jobs.data(), jobs.size() * sizeof(TopKJob), cudaMemcpyHostToDevice));
    const cudaError_t e = launchTopK(jobMem.at<const TopKJob>(0), count, ctx.stream);
    if (e != cudaSuccess) return cudaStatus("launch of the eviction top-k", e);
    KVC_CC_TRY("eviction top-k", cudaStreamSynchronize(ctx.stream));
    return Status::ok();
  };
  KVC_RETURN_IF_ERROR(pass.run(ctx, pool, codec, inputs.data(), count, plan, select));
  for (uint32_t i = 0; i < count; ++i) {
    keep[i].resize(budget[i]);
    if (budget[i])
      KVC_CC_TRY("cudaMemcpy of a keep set", cudaMemcpy(keep[i].data(), pass.mem.at<const int32_t>(keepAt[i]),
                                                        4ull * budget[i], cudaMemcpyDeviceToHost));
  }
  return Status::ok();
}

KVC_CUDA_NAMESPACE_END
