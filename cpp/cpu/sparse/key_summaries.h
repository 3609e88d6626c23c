// The CPU backend's key summaries and logit bounds of sparse decode (Backend::summarizeBlocks,
// Backend::blockBounds; formulas in kvc/key_summary.h). Bounds run one SIMD kernel per block
// (AVX-512, AVX2 or portable by cpuid); blockBoundsReference is the plain scalar version the
// tests hold them to.
#pragma once
#include <cstdint>
#include <vector>

#include "kvc/views.h"
#include "kvc/status.h"

namespace kvc::cpu {

class ThreadPool;

// With rope.spec.dims != 0 (host tables), keys are summarized after RoPE at their stored positions.
Status summarizeBlocks(const PoolView& pool, const RowCodec& codec, const RopeView& rope, const SummaryJob* jobs,
                       uint32_t count);
Status blockBounds(ThreadPool& threads, const BlockBoundsParams& params);

// Bounds of blocks [b0, b1) of one stream for M query vectors q [M][headDim], already in the
// keys' (rotated) space. Declared for the SIMD instances and the tests.
using BoundsRangeFn = void (*)(const PoolView& pool, const StreamView& s, uint32_t b0, uint32_t b1, const float* q,
                               uint32_t M, uint32_t headDim, float scale, float* bounds);
void blockBoundsReference(const PoolView& pool, const StreamView& s, uint32_t b0, uint32_t b1, const float* q,
                          uint32_t M, uint32_t headDim, float scale, float* bounds);
// The fastest instance this CPU runs for headDim (the reference when none fits); its name.
BoundsRangeFn pickBoundsKernel(uint32_t headDim, const char** name = nullptr);

}  // namespace kvc::cpu
