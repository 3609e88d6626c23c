// One contiguous range of a stream's rows compacted on its own: attention statistics,
// selection (highest attention or OMP), the NNLS fit of beta, the value fit and the
// per-query statistics that compaction.cpp merges across chunks for the diagnostics.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "compaction.h"
#include "parallel.h"

namespace kvc::compaction {

// Per query: max logit, Σ exp(logit − max), normalized attention output [nq, DV].
struct QueryStats {
  std::vector<float> m, z, y;
};

struct ChunkInput {
  const Problem* problem = nullptr;
  uint32_t rowBegin = 0, rowEnd = 0;     // rows [rowBegin, rowEnd) of the stream
  uint32_t target = 0;                   // rows to keep in this chunk
  const float* scaledQueries = nullptr;  // [n, D] queries / √D
  const float* packedQueries = nullptr;  // scaledQueries packed as B = Qᵀ (K = D, N = n)
  const float* scaledHeldOut = nullptr;  // [nHeldOut, D] or nullptr
  const int32_t* fixedKeep = nullptr;    // optional keep set, local indices ascending
  uint32_t fixedKeepCount = 0;
};

struct ChunkOutput {
  std::vector<int32_t> keep;  // stream indices, ascending
  std::vector<float> beta;    // [keep]
  std::vector<float> values;  // [keep, DV]
  QueryStats original, compacted, heldOutOriginal, heldOutCompacted;
  uint32_t ridgeRaises = 0;
  double secondsScores = 0, secondsSelect = 0, secondsNnls = 0, secondsValues = 0, secondsDiagnostics = 0;
};

// May throw std::bad_alloc (compaction.cpp turns it into OUT_OF_MEMORY); no other exceptions.
Status compactChunk(const cpu::compaction::CompactionKernels& k, Parallel& par, const ChunkInput& in,
                    const Options& options, ChunkOutput* out);

}  // namespace kvc::compaction
