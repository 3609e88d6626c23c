// Argument structs and launchers of the sparse-decode kernels (key summaries, logit bounds;
// formulas in kvc/key_summary.h). Every pointer is a device pointer.
#pragma once
#include <cstdint>

#include "../../compat.cuh"
#include "kvc/views.h"

KVC_CUDA_NAMESPACE_BEGIN

// summarizeBlocks: one thread block per job.
struct SummarizeArgs {
  PoolView pool;
  RowCodec codec;                      // key storage, headDim and groupSize only
  RopeView rope;                       // keys stored before RoPE: device tables; else dims 0
  const SummaryJob* jobs = nullptr;    // [count]
  uint32_t count = 0;
};

// Rotates `rows` query vectors of headDim floats in place (keys are stored rotated).
struct RotateQueriesArgs {
  float* queries = nullptr;            // [rows][headDim]
  const float* signs = nullptr;        // [headDim]
  uint32_t rows = 0;
  uint32_t headDim = 0;
};

// One unit of bound work: blocks [blockBegin, blockEnd) of stream `stream`.
struct BoundsWork {
  uint32_t stream = 0;
  uint32_t blockBegin = 0;
  uint32_t blockEnd = 0;
};

struct BoundsStreamArgs {
  const int32_t* blockTable = nullptr;  // [blocks]
  int32_t length = 0;
  float* bounds = nullptr;              // [blocks]
  const float* queries = nullptr;       // [M][headDim], rotated like the keys
};

struct BoundsArgs {
  PoolView pool;
  uint32_t headDim = 0;
  uint32_t queries = 0;                 // M = tq * queriesPerHead
  float scale = 1.0f;
  const BoundsStreamArgs* streams = nullptr;
  const BoundsWork* work = nullptr;     // [workCount]
  uint32_t workCount = 0;
};

// Blocks one BoundsWork covers (one thread block of four warps, a warp per block in turn).
constexpr uint32_t kBoundsBlocksPerWork = 64;

cudaError_t launchSummarizeBlocks(const SummarizeArgs& args, cudaStream_t stream);
cudaError_t launchRotateQueries(const RotateQueriesArgs& args, cudaStream_t stream);
cudaError_t launchBlockBounds(const BoundsArgs& args, cudaStream_t stream);

KVC_CUDA_NAMESPACE_END
