// Native timing entry points for the GPU check: decode attention over a synthetic pool of a
// real model's shape, and the device's copy bandwidth (the floor decode attention is judged
// against). They launch the kernels directly (no host staging in the timed region). In the
// emulated build (namespace kvc::cuda_emu::bench) they run too, timed by the host clock, so
// tests can call them at tiny shapes; their numbers only mean something on a GPU.
#pragma once
#include <cstdint>

#include "../compat.cuh"
#include "kvc/formats.h"
#include "kvc/status.h"

KVC_CUDA_NAMESPACE_BEGIN
namespace bench {

// One decode step (Tq = 1) of `batch` sequences, each with kvHeads streams of `tokens` rows.
struct DecodeAttentionShape {
  uint32_t batch = 1;
  uint32_t kvHeads = 8;
  uint32_t queriesPerHead = 4;  // GQA group
  uint32_t headDim = 128;
  uint32_t tokens = 16384;      // rows per stream
  uint32_t blockSize = 32;
  uint32_t groupSize = 32;
  Storage keys = Storage::kF16;
  Storage values = Storage::kF16;
  uint32_t warmup = 3;
  uint32_t iterations = 20;     // timed launches, each between two events
  uint64_t seed = 1;
};

struct Timing {
  Status status;             // not ok: nothing below is meaningful
  double medianMs = 0;       // median over the timed launches
  uint64_t bytes = 0;        // per launch: rows read (keys, values, beta, positions) + block tables
                             // + queries; for the copy: bytes read + bytes written
  double gbPerSecond = 0;    // bytes / median time
};

// Creates a pool of random (valid) rows in the given formats with shuffled block tables,
// times the attention launches (split, merge) and checks that the output is finite.
Timing decodeAttention(const DecodeAttentionShape& shape);

// cudaMemcpy device-to-device of a `bytes` buffer, median over `iterations` copies.
Timing deviceCopyBandwidth(uint64_t bytes = 1ull << 30, uint32_t iterations = 20);

}  // namespace bench
KVC_CUDA_NAMESPACE_END
