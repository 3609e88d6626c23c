// One device batch of compactStreams, planned on the host: the plan (sizes and offsets of every
// buffer in three arenas — downloaded reports, zeroed flags, workspace — and the fit), and the
// launch arguments of every kernel built from it once the device addresses are known. All sizes
// are known before any kernel runs: t = target (or the protected rows, or the chunk), f = t − |P|.
#pragma once
#include <cstdint>
#include <vector>

#include "../kernels/compaction/compaction_args.h"
#include "compaction_fit.h"
#include "cuda_compaction.h"
#include "device_memory.h"
#include "staging.h"

KVC_CUDA_NAMESPACE_BEGIN

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

struct BatchPlan {
  std::vector<StreamPlanDev> sp;
  std::vector<ChunkPlan> cp;
  Arena out{8}, zero, work, fitArena;  // downloaded | zeroed | scratch; the fit's own memory
  StagingBuffer staging;               // uploaded: block tables, raw queries, then the launch arguments
  std::vector<size_t> tableAt;         // [streams] block table offsets in the upload
  size_t keySignsAt = SIZE_MAX, valueSignsAt = SIZE_MAX;
};

// Fills *plan and the fit's stream entries [first, first + count) (piece `piece`).
Status planBatch(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                 const CompactionStreamInput* streams, uint32_t count, const compaction::Options& o,
                 CudaCompactionFit* fit, uint32_t first, uint32_t piece, BatchPlan* plan);

// Device addresses of the three arenas (one allocation: out | zero | work) and of the fit.
struct Bases {
  uint8_t* mem = nullptr;
  size_t zeroAt = 0, workAt = 0;
  uint8_t* fit = nullptr;
  uint8_t* W(size_t off) const { return mem + workAt + off; }
  uint8_t* O(size_t off) const { return mem + off; }
  uint8_t* Z(size_t off) const { return mem + zeroAt + off; }
  uint8_t* F(size_t off) const { return fit + off; }
};

struct BatchJobs {
  std::vector<DecodeStream> decode;
  std::vector<QueryJob> queryJobs;
  std::vector<GemmProblem> gScores, gOutputs, gHeldScores, gHeldOutputs, gLogits, gBetaGram, gBetaH, gValGram, gValR, gDiagScores, gDiagOutputs, gHeldDiagScores, gHeldDiagOutputs;
  std::vector<SoftmaxJob> smOriginal, smHeld, smCompacted, smHeldCompacted;
  std::vector<ColumnJob> columns;
  std::vector<TopKJob> topk, ompTopK;
  std::vector<OmpJob> ompJobs;
  std::vector<FitJob> fitAll, fitBeta, fitValues;
  std::vector<CholeskyJob> cholBeta, cholValues;
  std::vector<SolveJob> solveBeta, solveValues;
  std::vector<NnlsJob> nnls;
  std::vector<ChangedJob> changed;
  std::vector<QueryStatsDev> statsRef, statsGot, statsHeldRef, statsHeldGot;
  uint32_t maxT = 0, maxRows = 0, maxQ = 0, maxTk = 0, maxF = 0, ompIterations = 0;
  // Tiles of the largest problem of each batched GEMM launch.
  uint32_t tilesScores = 0, tilesOut = 0, tilesHS = 0, tilesHO = 0, tilesLt = 0, tilesBG = 0, tilesBH = 0, tilesVG = 0, tilesVR = 0, tilesDS = 0, tilesDO = 0, tilesHDS = 0, tilesHDO = 0;
};

void buildJobs(const BatchPlan& plan, const Bases& bases, const CompactionStreamInput* streams, uint32_t count,
               const compaction::Options& o, uint32_t D, uint32_t VD, const CudaCompactionFit& fit, uint32_t first,
               BatchJobs* jobs);

KVC_CUDA_NAMESPACE_END
