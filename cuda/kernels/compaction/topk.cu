// Top-k of per-row scores, one block per stream: radix select (8 bits per pass, MSB first)
// of the k-th largest 32-bit ordered score key (cpp/cpu/topk.h orderedScoreKey: NaN lowest),
// then one pass in index order that takes every key above the threshold and the lowest
// indices among the keys equal to it — the CPU's tie rule (higher score first, equal ->
// lower index). The same pass writes the ascending keep list through a block scan.
#include <cmath>

#include "compaction_args.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kThreads = 256, kWarpCount = kThreads / 32;

__device__ __forceinline__ uint32_t scoreKey(float score, uint32_t canonicalZero) {
  uint32_t bits = __float_as_uint(score);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0;  // NaN
  if (canonicalZero && (bits & 0x7FFFFFFFu) == 0) bits = 0;  // −0 == +0 as a comparison sees it
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Exclusive prefix sum of v over the block (thread order); *total = the sum. Uses `sh`
// (kWarpCount + 1 words of shared memory); ends with a barrier so `sh` can be reused.
__device__ __forceinline__ uint32_t blockScan(uint32_t v, uint32_t* sh, uint32_t* total) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint32_t inc = v;
  for (int o = 1; o < 32; o *= 2) {
    const uint32_t up = __shfl_up_sync(0xFFFFFFFFu, inc, o);
    if (static_cast<int>(lane) >= o) inc += up;
  }
  if (lane == 31) sh[warp] = inc;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t run = 0;
    for (unsigned w = 0; w < kWarpCount; ++w) {
      const uint32_t t = sh[w];
      sh[w] = run;
      run += t;
    }
    sh[kWarpCount] = run;
  }
  __syncthreads();
  const uint32_t result = inc - v + sh[warp];
  *total = sh[kWarpCount];
  __syncthreads();
  return result;
}

__device__ __forceinline__ float rawScore(const TopKJob& j, uint32_t i) {
  if (j.scores) return j.scores[i];
  return j.colAccSqrt ? static_cast<float>(sqrt(j.colAcc[i] / j.divisor)) : static_cast<float>(j.colAcc[i]);
}

__device__ void topKBlock(const TopKJob& j) {
  __shared__ uint32_t hist[256];
  __shared__ uint32_t sh[kWarpCount + 1];
  __shared__ uint32_t selDigit, selRemaining;
  const unsigned tid = threadIdx.x;
  const uint32_t n = j.n;

  // ---- scores (pooled along the rows when asked: SnapKV-style smoothing) ----
  const float* score = j.scores;
  if (!j.scores || j.pool > 1) {
    if (!j.scores) {
      for (uint32_t i = tid; i < n; i += kThreads) j.raw[i] = rawScore(j, i);
      __syncthreads();
    }
    const float* raw = j.scores ? j.scores : j.raw;
    score = raw;
    if (j.pool > 1) {
      const uint32_t half = j.pool / 2;
      if (j.poolMax) {
        for (uint32_t i = tid; i < n; i += kThreads) {
          const uint32_t lo = i >= half ? i - half : 0, hi = i + half + 1 < n ? i + half + 1 : n;
          // (m < v ? v : m): std::max's NaN behaviour, as cpu::compaction::pool1d.
          float m = raw[lo];
          for (uint32_t q = lo + 1; q < hi; ++q) m = m < raw[q] ? raw[q] : m;
          j.pooled[i] = m;
        }
      } else if (tid == 0) {
        // The CPU's sliding sum in f64, step for step (an infinity entering the window leaves
        // NaN behind it there too); average pooling is rare and O(n).
        double sum = 0.0;
        uint32_t lo = 0, hi = 0;
        for (uint32_t i = 0; i < n; ++i) {
          const uint32_t wantLo = i >= half ? i - half : 0, wantHi = i + half + 1 < n ? i + half + 1 : n;
          while (hi < wantHi) sum += raw[hi++];
          while (lo < wantLo) sum -= raw[lo++];
          j.pooled[i] = static_cast<float>(sum / (hi - lo));
        }
      }
      __syncthreads();
      score = j.pooled;
    }
  }
  auto eligible = [&](uint32_t i) { return !j.chosen[i] && !(j.exclude && j.exclude[i]); };

  // ---- how many rows compete ----
  uint32_t mine = 0;
  for (uint32_t i = tid; i < n; i += kThreads) mine += eligible(i) ? 1u : 0u;
  uint32_t competing = 0;
  blockScan(mine, sh, &competing);
  const uint32_t k = j.kPtr ? *j.kPtr : j.k;
  const uint32_t take = k < competing ? k : competing;

  // ---- threshold key and how many rows equal to it are taken ----
  uint32_t threshold = 0, takeEqual = 0xFFFFFFFFu;  // take == competing: everything
  if (take == 0) {
    threshold = 0xFFFFFFFFu;  // no key reaches it (+inf maps to 0xFF800000)
    takeEqual = 0;
  } else if (take < competing) {
    uint32_t prefix = 0, mask = 0, remaining = take;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (uint32_t b = tid; b < 256; b += kThreads) hist[b] = 0;
      __syncthreads();
      for (uint32_t i = tid; i < n; i += kThreads) {
        if (!eligible(i)) continue;
        const uint32_t key = scoreKey(score[i], j.canonicalZero);
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xFFu], 1u);
      }
      __syncthreads();
      if (tid == 0) {
        uint32_t above = 0;
        for (int d = 255; d >= 0; --d) {
          if (above + hist[d] >= remaining) {
            selDigit = static_cast<uint32_t>(d);
            selRemaining = remaining - above;
            break;
          }
          above += hist[d];
        }
      }
      __syncthreads();
      prefix |= selDigit << shift;
      mask |= 0xFFu << shift;
      remaining = selRemaining;
      __syncthreads();
    }
    threshold = prefix;
    takeEqual = remaining;
  }

  // ---- in index order: choose, then list the chosen rows ----
  uint32_t equalSeen = 0, keptSeen = 0, freeSeen = 0, protSeen = 0, pickSeen = 0;
  for (uint32_t base = 0; base < n; base += kThreads) {
    const uint32_t i = base + tid;
    const bool in = i < n;
    const bool prot = in && j.exclude && j.exclude[i];
    const bool elig = in && eligible(i);
    const uint32_t key = elig ? scoreKey(score[i], j.canonicalZero) : 0;
    const bool equal = elig && key == threshold && threshold != 0xFFFFFFFFu;
    uint32_t equals = 0;
    const uint32_t rank = blockScan(equal ? 1u : 0u, sh, &equals) + equalSeen;
    equalSeen += equals;
    const bool pick = elig && ((threshold != 0xFFFFFFFFu && key > threshold) || (equal && rank < takeEqual));
    const bool chosen = in && (prot || j.chosen[i] || pick);
    if (chosen && !j.chosen[i]) j.chosen[i] = 1;
    uint32_t kept = 0, frees = 0, prots = 0, picks = 0;
    const uint32_t qpos = blockScan(pick ? 1u : 0u, sh, &picks) + pickSeen;
    if (pick && j.picked) j.picked[qpos] = static_cast<int32_t>(i);
    pickSeen += picks;
    const uint32_t pos = blockScan(chosen ? 1u : 0u, sh, &kept) + keptSeen;
    const uint32_t fpos = blockScan(chosen && !prot ? 1u : 0u, sh, &frees) + freeSeen;
    const uint32_t ppos = blockScan(prot ? 1u : 0u, sh, &prots) + protSeen;
    if (chosen && j.keep) j.keep[pos] = static_cast<int32_t>(i) + j.indexBase;
    if (chosen && !prot && j.freePos) j.freePos[fpos] = static_cast<int32_t>(pos);
    if (prot && j.protPos) j.protPos[ppos] = static_cast<int32_t>(pos);
    keptSeen += kept;
    freeSeen += frees;
    protSeen += prots;
  }
  if (tid == 0 && j.counts) {
    j.counts[0] = freeSeen;
    j.counts[1] = protSeen;
  }
  if (tid == 0 && j.pickedCount) *j.pickedCount = pickSeen;
}

__global__ KVC_LAUNCH_BOUNDS(256, 2) void topKKernel(const TopKJob* jobs) { topKBlock(jobs[blockIdx.x]); }

}  // namespace

cudaError_t launchTopK(const TopKJob* jobs, uint32_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  KVC_LAUNCH(topKKernel, dim3(count), dim3(kThreads), 0, stream)(jobs);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
