// See compaction_batch.h: the plan of one device batch (chunking, the 'n < t' and OMP rules,
// every buffer's offset). Mirrors cpp/core/compaction/compaction.cpp and chunk_compactor.cpp.
#include <algorithm>
#include <string>

#include "compaction_batch.h"

KVC_CUDA_NAMESPACE_BEGIN

Status planBatch(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                 const CompactionStreamInput* streams, uint32_t count, const compaction::Options& o,
                 CudaCompactionFit* fit, uint32_t first, uint32_t piece, BatchPlan* plan) {
  // Keys (and queries) are D wide, value rows VD (low-rank caches may give them another rank).
  const uint32_t D = codec.headDim, VD = valueWidth(codec), bs = pool.layout.blockSize;
  auto& out = plan->out;
  auto& zero = plan->zero;
  auto& work = plan->work;
  auto& fitArena = plan->fitArena;
  auto& sp = plan->sp;
  auto& cp = plan->cp;
  auto& staging = plan->staging;
  auto& tableAt = plan->tableAt;
  sp.assign(count, StreamPlanDev());
  tableAt.assign(count, 0);
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
    s.values = work.array<float>(static_cast<size_t>(s.T) * VD);
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
        st->y = work.array<float>(static_cast<size_t>(nq) * VD);
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
        c.rhs = work.array<float>(static_cast<size_t>(n) * VD);
        c.r = work.array<float>(static_cast<size_t>(f) * VD);
        c.c = work.array<double>(static_cast<size_t>(f) * VD);
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
    fs.values = fitArena.array<float>(static_cast<size_t>(s.tTotal) * VD);
    fs.beta = fitArena.array<float>(s.tTotal);
    fs.changed = fitArena.array<uint8_t>(s.tTotal);
  }
  plan->keySignsAt = codec.keySigns ? staging.addArray(codec.keySigns, D) : SIZE_MAX;
  plan->valueSignsAt = codec.valueSigns ? staging.addArray(codec.valueSigns, VD) : SIZE_MAX;  // VD == D when rotated
  return Status::ok();
}

KVC_CUDA_NAMESPACE_END
