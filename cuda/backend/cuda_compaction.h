// Compaction and eviction numerics of the CUDA backend (Backend::compactStreams,
// applyCompactionFit, rowScores, selectRows): host-side planning of one batch, one upload of
// queries and launch arguments, the kernel sequence of cuda/kernels/compaction, and one
// download of the keep sets and reports. Rows never travel to the host. cuda_backend.cu
// checks the pool and codec and forwards here under its lock.
#pragma once
#include <memory>
#include <vector>

#include "../compat.cuh"
#include "kvc/backend.h"

KVC_CUDA_NAMESPACE_BEGIN

struct DeviceContext {
  uint64_t committedBlocks = 0;  // block ids must lie below
  cudaStream_t stream = 0;
  // Device bytes one batch of compactStreams may use for its workspace; 0: 60% of the free
  // device memory. Larger requests run as several device batches (tests lower it).
  uint64_t workspaceLimit = 0;
};

Status compactStreamsOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                              const CompactionStreamInput* streams, uint32_t count, const compaction::Options& options,
                              const CompactionControl& control, CompactionStreamReport* reports,
                              std::unique_ptr<CompactionFit>* fit);
Status applyCompactionFitOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                                  const CompactionFit& fit, uint32_t index, const StreamView& rebuilt);
// Inspection (tests): copies stream `index`'s fitted values [rows, D] (original space) and beta
// [rows] to the host. Never used by the backend itself.
Status readCompactionFit(const CompactionFit& fit, uint32_t index, std::vector<float>* values, std::vector<float>* beta);
Status rowScoresOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                         const RowScoreInput* streams, uint32_t count, float* const* scores);
Status selectRowsOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                          const RowSelectInput* streams, uint32_t count, std::vector<int32_t>* keep);

KVC_CUDA_NAMESPACE_END
