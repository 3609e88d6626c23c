// applyCompactionFit on the device: the changed rows of a rebuilt stream re-encoded from the
// fit through append's write path (one launch, no copy to the host); and readCompactionFit,
// the inspection accessor the tests use.
#include <string>
#include <vector>

#include "../kernels/compaction/compaction_args.h"
#include "compaction_fit.h"
#include "cuda_compaction.h"
#include "staging.h"

KVC_CUDA_NAMESPACE_BEGIN

Status applyCompactionFitOnDevice(const DeviceContext& ctx, const PoolView& pool, const RowCodec& codec,
                                  const CompactionFit& fitBase, const uint32_t index, const StreamView& rebuilt) {
  const auto* fit = dynamic_cast<const CudaCompactionFit*>(&fitBase);
  if (!fit) return invalidArgument("applyCompactionFit: the fit was not made by the CUDA backend");
  if (index >= fit->streams.size())
    return invalidArgument("applyCompactionFit: index " + std::to_string(index) + " is outside the batch of " +
                           std::to_string(fit->streams.size()));
  // Only the value width must agree: kept keys are never rewritten, and a fit made on a rope
  // stage (core/compaction/rope_stage.h) saw a low-rank stream's keys lifted to headDim while
  // the stream stores their coefficients (its values, coefficients too, were fitted as stored).
  if (fit->valueDim != valueWidth(codec))
    return shapeMismatch("applyCompactionFit: the codec's value width differs from the fit's");
  const CudaCompactionFit::Stream& s = fit->streams[index];
  if (rebuilt.length < 0 || static_cast<uint32_t>(rebuilt.length) != s.rows)
    return shapeMismatch("applyCompactionFit: the rebuilt stream has " + std::to_string(rebuilt.length) +
                         " rows, the fit " + std::to_string(s.rows));
  if (s.rows == 0) return Status::ok();
  if (!rebuilt.blockTable) return invalidArgument("applyCompactionFit: block table is null");
  const uint32_t blocks = (s.rows + pool.layout.blockSize - 1) / pool.layout.blockSize;
  KVC_RETURN_IF_ERROR(checkTable(rebuilt.blockTable, blocks, ctx.committedBlocks, "applyCompactionFit"));
  StagingBuffer staging;
  const size_t aTable = staging.addArray(rebuilt.blockTable, blocks);
  const size_t aSigns = codec.valueSigns ? staging.addArray(codec.valueSigns, codec.headDim) : SIZE_MAX;
  DeviceBuffer args;
  KVC_CC_TRY("cudaMalloc of the apply arguments", args.reserve(staging.size()));
  KVC_CC_TRY("cudaMemcpy of the apply arguments",
             cudaMemcpy(args.get(), staging.hostAt(0), staging.size(), cudaMemcpyHostToDevice));
  ApplyFitArgs a;
  a.pool = pool;
  a.codec = codec;
  a.codec.keySigns = nullptr;
  a.codec.valueSigns = aSigns == SIZE_MAX ? nullptr : args.at<const float>(aSigns);
  a.blockTable = args.at<const int32_t>(aTable);
  a.count = s.rows;
  a.values = fit->memory(s).at<const float>(s.values);
  a.beta = fit->memory(s).at<const float>(s.beta);
  a.changed = fit->memory(s).at<const uint8_t>(s.changed);
  const cudaError_t e = launchApplyFit(a, ctx.stream);
  if (e != cudaSuccess) return cudaStatus("launch of applyFit", e);
  KVC_CC_TRY("applyFit kernel", cudaStreamSynchronize(ctx.stream));
  return Status::ok();
}

Status readCompactionFit(const CompactionFit& fitBase, uint32_t index, std::vector<float>* values,
                         std::vector<float>* beta) {
  const auto* fit = dynamic_cast<const CudaCompactionFit*>(&fitBase);
  if (!fit || index >= fit->streams.size()) return invalidArgument("readCompactionFit: no such stream in this fit");
  const CudaCompactionFit::Stream& s = fit->streams[index];
  values->resize(static_cast<size_t>(s.rows) * fit->valueDim);
  beta->resize(s.rows);
  KVC_CC_TRY("cudaMemcpy of fitted values",
             cudaMemcpy(values->data(), fit->memory(s).at<const float>(s.values), values->size() * 4, cudaMemcpyDeviceToHost));
  KVC_CC_TRY("cudaMemcpy of fitted beta",
             cudaMemcpy(beta->data(), fit->memory(s).at<const float>(s.beta), beta->size() * 4, cudaMemcpyDeviceToHost));
  return Status::ok();
}

KVC_CUDA_NAMESPACE_END
