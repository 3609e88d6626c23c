// Sparse decode on the CUDA backend (Backend::summarizeBlocks, Backend::blockBounds): one
// upload of the jobs (or of the queries and block tables), the kernels of
// cuda/kernels/sparse, one download of the bounds (4 bytes per block). cuda_backend.cu checks
// the pool and codec and forwards here under its lock.
#pragma once
#include "../compat.cuh"
#include "cuda_compaction.h"
#include "kvc/backend.h"

KVC_CUDA_NAMESPACE_BEGIN

Status summarizeBlocksOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec, const RopeView& rope,
                               const SummaryJob* jobs, uint32_t count);
Status blockBoundsOnDevice(const DeviceContext& ctx, const BlockBoundsParams& params);

KVC_CUDA_NAMESPACE_END
