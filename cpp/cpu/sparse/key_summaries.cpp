// Key summaries and logit bounds of sparse decode on the CPU (see key_summaries.h).
#include "key_summaries.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kvc/rope.h"

#include "../append_rows.h"
#include "../cpu_features.h"
#include "../hadamard.h"
#include "../kernel_table.h"
#include "../thread_pool.h"
#include "bounds_common.h"

namespace kvc::cpu {

BoundsRangeFn avx2BoundsKernel();
BoundsRangeFn avx512BoundsKernel();

namespace {
// Blocks per bounds task: ~32K rows of a stream at blockSize 32, a few microseconds of work.
constexpr uint32_t kBlocksPerTask = 1024;
}  // namespace

Status summarizeBlocks(const PoolView& pool, const RowCodec& codec, const RopeView& rope, const SummaryJob* jobs,
                       uint32_t count) {
  const BlockLayout& L = pool.layout;
  if (!hasSummaries(pool)) return invalidArgument("summarizeBlocks: the pool has no key summaries");
  const KernelTable& kt = pickKernels(codec);
  const uint32_t D = codec.headDim;
  std::vector<float> keys(static_cast<size_t>(L.blockSize) * D), lo(D), hi(D), cBuf(rope.spec.dims), sBuf(rope.spec.dims);
  for (uint32_t j = 0; j < count; ++j) {
    const SummaryJob& job = jobs[j];
    if (job.block < 0 || job.begin >= job.end || job.end > L.blockSize) {
      return invalidArgument("summarizeBlocks: job " + std::to_string(j) + " names no rows of a block");
    }
    const uint8_t* block = pool.base + static_cast<uint64_t>(job.block) * L.blockBytes;
    uint8_t* entry = summaryEntry(pool, job.block);
    uint16_t* summary = summaryBounds(entry);
    const float* beta = reinterpret_cast<const float*>(block + L.betaOffset);
    float maxBeta = job.begin == 0 ? -INFINITY : *summaryMaxBeta(entry);
    for (uint32_t r = job.begin; r < job.end; ++r) maxBeta = std::max(maxBeta, beta[r]);
    *summaryMaxBeta(entry) = maxBeta;
    const uint32_t n = job.end - job.begin;
    kt.decode[static_cast<int>(codec.keyStorage)](block + static_cast<uint64_t>(job.begin) * L.keyRowBytes, n,
                                                  L.keyRowBytes, D, codec.groupSize, keys.data());
    for (uint32_t d = 0; d < D; ++d) {
      lo[d] = job.begin == 0 ? INFINITY : bf16ToFloat(summary[d]);
      hi[d] = job.begin == 0 ? -INFINITY : bf16ToFloat(summary[D + d]);
    }
    if (rope.spec.dims != 0) {
      // Keys stored before RoPE are summarized after RoPE at their stored positions.
      const int32_t* positions = reinterpret_cast<const int32_t*>(block + L.positionsOffset) + job.begin;
      for (uint32_t r = 0; r < n; ++r) {
        const float *c, *s;
        ropeLevelAngles(rope.cosTable, rope.sinTable, rope.spec.dims, static_cast<uint32_t>(positions[r]), cBuf.data(),
                        sBuf.data(), &c, &s);
        ropeApply(keys.data() + static_cast<size_t>(r) * D, rope.spec, c, s);
      }
    }
    for (uint32_t r = 0; r < n; ++r) {
      const float* k = keys.data() + static_cast<size_t>(r) * D;
      for (uint32_t d = 0; d < D; ++d) {
        lo[d] = std::min(lo[d], k[d]);
        hi[d] = std::max(hi[d], k[d]);
      }
    }
    for (uint32_t d = 0; d < D; ++d) {
      summary[d] = bf16Down(lo[d]);
      summary[D + d] = bf16Up(hi[d]);
    }
  }
  return Status::ok();
}

void blockBoundsReference(const PoolView& pool, const StreamView& s, uint32_t b0, uint32_t b1, const float* q,
                          uint32_t M, uint32_t D, float scale, float* bounds) {
  for (uint32_t b = b0; b < b1; ++b) {
    const uint8_t* entry = summaryEntry(pool, s.blockTable[b]);
    const uint16_t* sm = summaryBounds(entry);
    float best = -INFINITY;
    for (uint32_t m = 0; m < M; ++m) {
      float acc = 0.0f;
      for (uint32_t d = 0; d < D; ++d) acc += boundTerm(q[static_cast<size_t>(m) * D + d], bf16ToFloat(sm[d]), bf16ToFloat(sm[D + d]));
      best = std::max(best, acc);
    }
    bounds[b] = finishBound(entry, best, scale);
  }
}

BoundsRangeFn pickBoundsKernel(uint32_t D, const char** name) {
  const CpuFeatures& f = cpuFeatures();
  BoundsRangeFn fn = nullptr;
  const char* n = "reference";
  if (f.avx512 && D % 16 == 0 && (fn = avx512BoundsKernel())) n = "avx512";
  if (!fn && f.avx2 && D % 8 == 0 && (fn = avx2BoundsKernel())) n = "avx2";
  if (!fn) fn = &blockBoundsReference;
  if (name) *name = n;
  return fn;
}

Status blockBounds(ThreadPool& threads, const BlockBoundsParams& p) {
  const BlockLayout& L = p.pool.layout;
  if (!hasSummaries(p.pool)) return invalidArgument("blockBounds: the pool has no key summaries");
  const uint32_t D = p.codec.headDim, G = p.queriesPerHead, M = p.tq * G;
  // Queries of every stream, contiguous [M][D] and rotated like the keys.
  std::vector<float> q(static_cast<size_t>(p.streamCount) * M * D);
  struct Task {
    uint32_t stream, b0, b1;
  };
  std::vector<Task> tasks;
  for (uint32_t s = 0; s < p.streamCount; ++s) {
    const BoundsStream& st = p.streams[s];
    if (st.kv.length < 0 || !st.queries || (st.kv.length > 0 && (!st.bounds || !st.kv.blockTable))) {
      return invalidArgument("blockBounds: stream " + std::to_string(s) + " needs queries, a block table and bounds");
    }
    float* dst = q.data() + static_cast<size_t>(s) * M * D;
    for (uint32_t m = 0; m < M; ++m) {
      std::memcpy(dst + static_cast<size_t>(m) * D, st.queries + (m / G) * p.tokenStride + (m % G) * D, 4ull * D);
      if (p.codec.keySigns) rotateForward(dst + static_cast<size_t>(m) * D, p.codec.keySigns, D);
    }
    const uint32_t blocks = (static_cast<uint32_t>(st.kv.length) + L.blockSize - 1) / L.blockSize;
    for (uint32_t b = 0; b < blocks; b += kBlocksPerTask) tasks.push_back({s, b, std::min(blocks, b + kBlocksPerTask)});
  }
  const BoundsRangeFn fn = pickBoundsKernel(D);
  threads.run(static_cast<uint32_t>(tasks.size()), [&](uint32_t i, uint32_t) {
    const Task& t = tasks[i];
    fn(p.pool, p.streams[t.stream].kv, t.b0, t.b1, q.data() + static_cast<size_t>(t.stream) * M * D, M, D, p.scale,
       p.streams[t.stream].bounds);
  });
  return Status::ok();
}

}  // namespace kvc::cpu
