// See cuda_sparse.h.
#include "cuda_sparse.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../kernels/sparse/sparse_args.h"
#include "device_memory.h"
#include "staging.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

Status checkBlockId(const DeviceContext& ctx, int32_t block) {
  if (block < 0 || static_cast<uint64_t>(block) >= ctx.committedBlocks) {
    return invalidArgument("block id " + std::to_string(block) + " is outside the committed pool");
  }
  return Status::ok();
}

Status finishLaunch(const DeviceContext& ctx, const char* kernel, cudaError_t launch) {
  if (launch != cudaSuccess) return cudaStatus(std::string("launch of ") + kernel, launch);
  KVC_CC_TRY(std::string(kernel) + " kernel", cudaStreamSynchronize(ctx.stream));
  return Status::ok();
}

}  // namespace

Status summarizeBlocksOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec, const RopeView& rope,
                               const SummaryJob* jobs, uint32_t count) {
  const BlockLayout& L = pool.layout;
  if (!pool.summaries || L.summaryBytes == 0) return invalidArgument("summarizeBlocks: the pool has no key summaries");
  if (count == 0) return Status::ok();
  if (!jobs) return invalidArgument("summarizeBlocks: jobs are required");
  for (uint32_t j = 0; j < count; ++j) {
    KVC_RETURN_IF_ERROR(checkBlockId(ctx, jobs[j].block));
    if (jobs[j].begin >= jobs[j].end || jobs[j].end > L.blockSize) {
      return invalidArgument("summarizeBlocks: job " + std::to_string(j) + " names no rows of a block");
    }
  }
  DeviceMemory mem;
  KVC_CC_TRY("cudaMalloc of the summary jobs", mem.allocate(count * sizeof(SummaryJob)));
  KVC_CC_TRY("cudaMemcpy of the summary jobs", cudaMemcpy(mem.get(), jobs, count * sizeof(SummaryJob), cudaMemcpyHostToDevice));
  SummarizeArgs a;
  a.pool = pool;
  a.codec = codec;
  a.codec.keySigns = a.codec.valueSigns = nullptr;  // summaries live in the stored (rotated) space
  a.rope = rope;  // device tables, or dims 0
  a.jobs = mem.at<const SummaryJob>(0);
  a.count = count;
  return finishLaunch(ctx, "summarizeBlocks", launchSummarizeBlocks(a, ctx.stream));
}

Status blockBoundsOnDevice(const DeviceContext& ctx, const BlockBoundsParams& p) {
  const BlockLayout& L = p.pool.layout;
  if (!p.pool.summaries || L.summaryBytes == 0) return invalidArgument("blockBounds: the pool has no key summaries");
  const uint32_t D = p.codec.headDim, G = p.queriesPerHead, M = p.tq * G, S = p.streamCount;
  if (S == 0) return Status::ok();
  if (!p.streams || G == 0) return invalidArgument("blockBounds: streams and queriesPerHead are required");
  StagingBuffer staging;
  std::vector<size_t> tableAt(S), boundsAt(S);
  std::vector<uint32_t> blocks(S);
  std::vector<BoundsWork> work;
  const size_t queriesAt = staging.add(nullptr, static_cast<size_t>(S) * M * D * sizeof(float));
  for (uint32_t s = 0; s < S; ++s) {
    const BoundsStream& st = p.streams[s];
    if (st.kv.length < 0 || !st.queries || (st.kv.length > 0 && (!st.bounds || !st.kv.blockTable))) {
      return invalidArgument("blockBounds: stream " + std::to_string(s) + " needs queries, a block table and bounds");
    }
    blocks[s] = (static_cast<uint32_t>(st.kv.length) + L.blockSize - 1) / L.blockSize;
    for (uint32_t b = 0; b < blocks[s]; ++b) KVC_RETURN_IF_ERROR(checkBlockId(ctx, st.kv.blockTable[b]));
    tableAt[s] = staging.addArray(st.kv.blockTable, blocks[s]);
    for (uint32_t b = 0; b < blocks[s]; b += kBoundsBlocksPerWork) {
      work.push_back(BoundsWork{s, b, std::min(blocks[s], b + kBoundsBlocksPerWork)});
    }
    float* q = reinterpret_cast<float*>(staging.hostAt(queriesAt)) + static_cast<size_t>(s) * M * D;
    for (uint32_t m = 0; m < M; ++m) {
      std::memcpy(q + static_cast<size_t>(m) * D, st.queries + (m / G) * p.tokenStride + (m % G) * D, D * sizeof(float));
    }
  }
  const size_t signsAt = p.codec.keySigns ? staging.addArray(p.codec.keySigns, D) : SIZE_MAX;
  const size_t workAt = staging.addArray(work.data(), work.size());
  const size_t streamsAt = staging.add(nullptr, S * sizeof(BoundsStreamArgs));
  const size_t uploadBytes = staging.size();
  for (uint32_t s = 0; s < S; ++s) boundsAt[s] = staging.add(nullptr, blocks[s] * sizeof(float));
  DeviceMemory mem;
  KVC_CC_TRY("cudaMalloc of the bounds workspace", mem.allocate(staging.size()));
  auto* streams = reinterpret_cast<BoundsStreamArgs*>(staging.hostAt(streamsAt));
  for (uint32_t s = 0; s < S; ++s) {
    streams[s].blockTable = mem.at<const int32_t>(tableAt[s]);
    streams[s].length = p.streams[s].kv.length;
    streams[s].bounds = mem.at<float>(boundsAt[s]);
    streams[s].queries = mem.at<const float>(queriesAt) + static_cast<size_t>(s) * M * D;
  }
  KVC_CC_TRY("cudaMemcpy of the bounds inputs", cudaMemcpy(mem.get(), staging.hostAt(0), uploadBytes, cudaMemcpyHostToDevice));
  if (p.codec.keySigns) {
    RotateQueriesArgs r;
    r.queries = mem.at<float>(queriesAt);
    r.signs = mem.at<const float>(signsAt);
    r.rows = S * M;
    r.headDim = D;
    KVC_RETURN_IF_ERROR(finishLaunch(ctx, "rotateQueries", launchRotateQueries(r, ctx.stream)));
  }
  BoundsArgs a;
  a.pool = p.pool;
  a.headDim = D;
  a.queries = M;
  a.scale = p.scale;
  a.streams = mem.at<const BoundsStreamArgs>(streamsAt);
  a.work = mem.at<const BoundsWork>(workAt);
  a.workCount = static_cast<uint32_t>(work.size());
  KVC_RETURN_IF_ERROR(finishLaunch(ctx, "blockBounds", launchBlockBounds(a, ctx.stream)));
  if (staging.size() > uploadBytes) {
    KVC_CC_TRY("cudaMemcpy of the bounds", cudaMemcpy(staging.hostAt(uploadBytes), mem.get() + uploadBytes,
                                                      staging.size() - uploadBytes, cudaMemcpyDeviceToHost));
  }
  for (uint32_t s = 0; s < S; ++s) {
    if (blocks[s]) std::memcpy(p.streams[s].bounds, staging.hostAt(boundsAt[s]), blocks[s] * sizeof(float));
  }
  return Status::ok();
}

KVC_CUDA_NAMESPACE_END
