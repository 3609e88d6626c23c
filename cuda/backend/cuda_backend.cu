// kvc::Backend on the GPU: the block pool is one cudaMalloc made at reservePool; each
// operation checks its arguments, packs the host inputs into one upload, launches, waits,
// and copies the outputs back. Every CUDA error becomes a Status (kCudaError); nothing aborts.
#include "cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "../kernels/kernel_args.h"
#include "cuda_compaction.h"
#include "cuda_sparse.h"
#include "kvc/finite.h"
#include "kvc/rope.h"
#include "staging.h"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr uint32_t kMaxHeadDim = 1024;

// cudaMalloc of `bytes` for `what`; OUT_OF_MEMORY with *out null when the device refuses.
Status allocateDevice(uint64_t bytes, const char* what, uint8_t** out) {
  const cudaError_t e = cudaMalloc(reinterpret_cast<void**>(out), bytes);
  if (e == cudaSuccess) return Status::ok();
  *out = nullptr;
  cudaGetLastError();
  return outOfMemory("cudaMalloc of " + std::to_string(bytes) + " bytes for " + what + ": " + cudaGetErrorString(e));
}

Status cudaFailure(const std::string& what, cudaError_t error) {
  cudaGetLastError();  // clear the sticky per-thread error so the next call starts clean
  return Status(StatusCode::kCudaError, what + ": " + cudaGetErrorString(error));
}

#define KVC_CUDA_TRY(what, expr)                         \
  do {                                                   \
    const cudaError_t kvc_err_ = (expr);                 \
    if (kvc_err_ != cudaSuccess) return cudaFailure((what), kvc_err_); \
  } while (0)

bool isPowerOfTwo(uint32_t x) { return x && (x & (x - 1)) == 0; }

Status validateCodec(const RowCodec& c, const BlockLayout& L) {
  const uint32_t D = c.headDim, VD = valueWidth(c);
  if (D == 0 || D > kMaxHeadDim) return invalidArgument("headDim must be in [1, 1024], got " + std::to_string(D));
  if (VD > kMaxHeadDim) return invalidArgument("valueDim must be in [1, 1024], got " + std::to_string(VD));
  const bool quantized = isQuantized(c.keyStorage) || isQuantized(c.valueStorage);
  if (quantized && (c.groupSize == 0 || D % c.groupSize != 0 || VD % c.groupSize != 0)) {
    return invalidArgument("groupSize must divide headDim (and valueDim) for quantized storage");
  }
  if (c.valueSigns && VD != D) return invalidArgument("value rotation needs value rows of headDim floats");
  if ((c.keyStorage == Storage::kInt4 || c.valueStorage == Storage::kInt4) && c.groupSize % 2 != 0) {
    return invalidArgument("int4 storage needs an even groupSize");
  }
  if ((c.keySigns || c.valueSigns) && !isPowerOfTwo(D)) {
    return invalidArgument("Hadamard rotation needs a power-of-two headDim, got " + std::to_string(D));
  }
  if (L.blockSize == 0 || L.keyRowBytes != rowBytes(c.keyStorage, D, c.groupSize) ||
      L.valueRowBytes != rowBytes(c.valueStorage, VD, c.groupSize)) {
    return shapeMismatch("block layout does not match the row codec");
  }
  return Status::ok();
}

uint32_t blocksFor(uint64_t rows, uint32_t blockSize) { return static_cast<uint32_t>((rows + blockSize - 1) / blockSize); }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const char* name) : name_(name) {}
  ~CudaBackend() override {
    cudaFree(pool_);
    cudaFree(summaries_);
  }

  const char* name() const override { return name_; }
  bool attendsValueDim() const override { return true; }
  bool attendsLiftedKeys() const override { return true; }

  Status reservePool(uint64_t capacityBlocks, uint32_t blockBytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pool_) return invalidArgument("reservePool: the pool is already reserved");
    if (blockBytes == 0 || blockBytes % 64 != 0) return invalidArgument("reservePool: blockBytes must be a multiple of 64");
    if (capacityBlocks == 0) return invalidArgument("reservePool: capacityBlocks must be positive");
    const uint64_t bytes = capacityBlocks * blockBytes;
    if (bytes / blockBytes != capacityBlocks) return outOfMemory("reservePool: size overflows");
    KVC_RETURN_IF_ERROR(allocateDevice(bytes, "the block pool", &pool_));
    capacity_ = capacityBlocks;
    blockBytes_ = blockBytes;
    return Status::ok();
  }

  // The reservation is already device memory: committing only moves the usable bound.
  Status commitPool(uint64_t blocks) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (blocks > capacity_) {
      return outOfMemory("commitPool: " + std::to_string(blocks) + " blocks exceed the reservation of " +
                         std::to_string(capacity_));
    }
    if (blocks > committed_) committed_ = blocks;
    return Status::ok();
  }

  // A device pointer: the core must never dereference it (use readRows / gatherRows).
  uint8_t* poolBase() override { return pool_; }
  uint64_t committedBytes() const override { return capacity_ * (uint64_t{blockBytes_} + summaryBytes_); }

  // The side array is device memory for the whole capacity, like the pool.
  Status reserveSummaries(uint32_t entryBytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!pool_) return invalidArgument("reserveSummaries: the pool is not reserved");
    if (summaries_) return invalidArgument("reserveSummaries: the summaries are already reserved");
    if (entryBytes == 0 || entryBytes % 16 != 0) return invalidArgument("reserveSummaries: entryBytes must be a multiple of 16");
    KVC_RETURN_IF_ERROR(allocateDevice(capacity_ * entryBytes, "the key summaries", &summaries_));
    summaryBytes_ = entryBytes;
    return Status::ok();
  }
  uint8_t* summaryBase() override { return summaries_; }

  Status append(const AppendParams& p) override;
  Status attention(const AttentionParams& p) override;
  Status copyBlocks(const PoolView& pool, const int32_t* src, const int32_t* dst, uint32_t count) override;
  Status readRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                  uint32_t count, float* keys, float* values, float* beta, int32_t* positions) override;
  Status gatherRows(const PoolView& pool, const StreamView& src, const int32_t* srcRows, uint32_t count,
                    const StreamView& dst, uint32_t dstStart) override;
  Status rewriteRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                     uint32_t count, const float* values, const float* beta) override;
  // Sparse decode: cuda_sparse.cu, under this backend's lock.
  Status summarizeBlocks(const PoolView& pool, const RowCodec& codec, const RopeSpec& rope, const SummaryJob* jobs,
                         uint32_t count) override {
    std::lock_guard<std::mutex> lock(mutex_);
    KVC_RETURN_IF_ERROR(checkPool(pool));
    KVC_RETURN_IF_ERROR(validateCodec(codec, pool.layout));
    RopeView view;
    view.spec = rope;
    if (rope.dims != 0) {
      if (rope.dims > codec.headDim || rope.dims % 2 != 0) return invalidArgument("summarizeBlocks: rope.dims must be even and <= headDim");
      KVC_RETURN_IF_ERROR(uploadRopeTables(rope));
      view.cosTable = ropeTables_.at<const float>(0);
      view.sinTable = ropeTables_.at<const float>(ropeTableBytes(rope));
    }
    return summarizeBlocksOnDevice(context(), pool, codec, view, jobs, count);
  }
  Status blockBounds(const BlockBoundsParams& params) override {
    std::lock_guard<std::mutex> lock(mutex_);
    KVC_RETURN_IF_ERROR(checkPool(params.pool));
    KVC_RETURN_IF_ERROR(validateCodec(params.codec, params.pool.layout));
    return blockBoundsOnDevice(context(), params);
  }
  // Compaction and eviction numerics: cuda_compaction.cu, under this backend's lock.
  uint32_t compactionBatchSize(uint32_t /*threads*/) const override { return 64; }
  Status compactStreams(const PoolView& pool, const RowCodec& codec, const CompactionStreamInput* streams,
                        uint32_t count, const compaction::Options& options, const CompactionControl& control,
                        CompactionStreamReport* reports, std::unique_ptr<CompactionFit>* fit) override {
    std::lock_guard<std::mutex> lock(mutex_);
    KVC_RETURN_IF_ERROR(checkPool(pool));
    KVC_RETURN_IF_ERROR(validateCodec(codec, pool.layout));
    return compactStreamsOnDevice(context(), pool, codec, streams, count, options, control, reports, fit);
  }
  Status applyCompactionFit(const PoolView& pool, const RowCodec& codec, const CompactionFit& fit, uint32_t index,
                            const StreamView& rebuilt) override {
    std::lock_guard<std::mutex> lock(mutex_);
    KVC_RETURN_IF_ERROR(checkPool(pool));
    KVC_RETURN_IF_ERROR(validateCodec(codec, pool.layout));
    return applyCompactionFitOnDevice(context(), pool, codec, fit, index, rebuilt);
  }
  Status rowScores(const PoolView& pool, const RowCodec& codec, const RowScoreInput* streams, uint32_t count,
                   float* const* scores) override {
    std::lock_guard<std::mutex> lock(mutex_);
    KVC_RETURN_IF_ERROR(checkPool(pool));
    KVC_RETURN_IF_ERROR(validateCodec(codec, pool.layout));
    return rowScoresOnDevice(context(), pool, codec, streams, count, scores);
  }
  Status selectRows(const PoolView& pool, const RowCodec& codec, const RowSelectInput* streams, uint32_t count,
                    std::vector<int32_t>* keep) override {
    std::lock_guard<std::mutex> lock(mutex_);
    KVC_RETURN_IF_ERROR(checkPool(pool));
    KVC_RETURN_IF_ERROR(validateCodec(codec, pool.layout));
    return selectRowsOnDevice(context(), pool, codec, streams, count, keep);
  }
  Status readRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count, uint8_t* keyRows,
                     uint8_t* valueRows, float* beta, int32_t* positions) override {
    return rawRows(pool, stream, start, count, keyRows, valueRows, beta, positions, false);
  }
  Status writeRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                      const uint8_t* keyRows, const uint8_t* valueRows, const float* beta,
                      const int32_t* positions) override {
    return rawRows(pool, stream, start, count, const_cast<uint8_t*>(keyRows), const_cast<uint8_t*>(valueRows),
                   const_cast<float*>(beta), const_cast<int32_t*>(positions), true);
  }

 private:
  // Serialization moves encoded rows between host memory and whole blocks: each block the
  // rows touch is copied to the host, read or patched there, and (when writing) copied back.
  Status rawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count, uint8_t* keyRows,
                 uint8_t* valueRows, float* beta, int32_t* positions, bool write) {
    std::lock_guard<std::mutex> lock(mutex_);
    KVC_RETURN_IF_ERROR(checkPool(pool));
    if (count == 0) return Status::ok();
    if (stream.length < 0 || static_cast<uint64_t>(start) + count > static_cast<uint64_t>(stream.length)) {
      return invalidArgument("raw rows exceed the stream length");
    }
    const BlockLayout& L = pool.layout;
    std::vector<uint8_t> block(L.blockBytes);
    for (uint32_t i = 0; i < count;) {
      const uint32_t r = start + i;
      const int32_t id = stream.blockTable[r / L.blockSize];
      KVC_RETURN_IF_ERROR(checkBlock(id));
      uint8_t* device = pool_ + static_cast<uint64_t>(id) * L.blockBytes;
      KVC_CUDA_TRY("cudaMemcpy of a block to the host", cudaMemcpy(block.data(), device, L.blockBytes, cudaMemcpyDeviceToHost));
      const uint32_t slot0 = r % L.blockSize;
      const uint32_t n = std::min(count - i, L.blockSize - slot0);
      for (uint32_t k = 0; k < n; ++k) {
        const uint32_t slot = slot0 + k;
        uint8_t* key = block.data() + static_cast<uint64_t>(slot) * L.keyRowBytes;
        uint8_t* value = block.data() + L.valuesOffset + static_cast<uint64_t>(slot) * L.valueRowBytes;
        float* b = reinterpret_cast<float*>(block.data() + L.betaOffset) + slot;
        int32_t* pos = reinterpret_cast<int32_t*>(block.data() + L.positionsOffset) + slot;
        uint8_t* hk = keyRows + static_cast<uint64_t>(i + k) * L.keyRowBytes;
        uint8_t* hv = valueRows + static_cast<uint64_t>(i + k) * L.valueRowBytes;
        if (write) {
          std::memcpy(key, hk, L.keyRowBytes);
          std::memcpy(value, hv, L.valueRowBytes);
          *b = beta[i + k];
          *pos = positions[i + k];
        } else {
          std::memcpy(hk, key, L.keyRowBytes);
          std::memcpy(hv, value, L.valueRowBytes);
          beta[i + k] = *b;
          positions[i + k] = *pos;
        }
      }
      if (write) {
        KVC_CUDA_TRY("cudaMemcpy of a block to the device", cudaMemcpy(device, block.data(), L.blockBytes, cudaMemcpyHostToDevice));
      }
      i += n;
    }
    return Status::ok();
  }

  DeviceContext context() const { return DeviceContext{committed_, stream_, 0}; }
  Status checkPool(const PoolView& pool) const {
    if (!pool_) return invalidArgument("the pool is not reserved");
    if (pool.base != pool_ || pool.layout.blockBytes != blockBytes_ ||
        (pool.summaries && (pool.summaries != summaries_ || pool.layout.summaryBytes != summaryBytes_))) {
      return invalidArgument("pool view does not describe this backend's pool");
    }
    return Status::ok();
  }
  Status checkBlock(int32_t block) const {
    if (block < 0 || static_cast<uint64_t>(block) >= committed_) {
      return invalidArgument("block id " + std::to_string(block) + " is outside the committed pool");
    }
    return Status::ok();
  }
  // Stages `count` entries of a block table starting at entry `first`, validating each id.
  Status stageTable(const int32_t* table, uint32_t first, uint32_t count, size_t* offset) {
    if (count && !table) return invalidArgument("block table is null");
    for (uint32_t i = 0; i < count; ++i) KVC_RETURN_IF_ERROR(checkBlock(table[first + i]));
    *offset = staging_.addArray(table + first, count);
    return Status::ok();
  }
  // Checks that rows [start, start + count) (count > 0) lie within the stream, then starts a
  // fresh staging with the block-table entries that hold them; *first is the first entry.
  Status stageRowRange(const char* op, const StreamView& stream, uint32_t start, uint32_t count, uint32_t blockSize,
                       uint32_t* first, size_t* oTable) {
    if (stream.length < 0 || static_cast<uint64_t>(start) + count > static_cast<uint64_t>(stream.length)) {
      return invalidArgument(std::string(op) + ": rows [" + std::to_string(start) + ", " +
                             std::to_string(uint64_t(start) + count) + ") exceed the stream length " +
                             std::to_string(stream.length));
    }
    *first = start / blockSize;
    const uint32_t last = static_cast<uint32_t>((uint64_t(start) + count - 1) / blockSize);
    staging_.clear();
    return stageTable(stream.blockTable, *first, last - *first + 1, oTable);
  }
  size_t stageSigns(const float* signs, uint32_t D) { return signs ? staging_.addArray(signs, D) : SIZE_MAX; }
  const float* deviceSigns(size_t offset) const {
    return offset == SIZE_MAX ? nullptr : device_.at<const float>(offset);
  }
  // Makes the device buffer large enough for everything staged so far; device addresses
  // (device_.at) are valid from here on.
  Status reserveDevice() {
    KVC_CUDA_TRY("cudaMalloc of the staging buffer", device_.reserve(staging_.size()));
    return Status::ok();
  }
  Status upload(size_t bytes) {
    KVC_CUDA_TRY("cudaMemcpy to the device", cudaMemcpy(device_.get(), staging_.hostAt(0), bytes, cudaMemcpyHostToDevice));
    return Status::ok();
  }
  Status download(size_t offset, size_t bytes) {
    if (!bytes) return Status::ok();
    KVC_CUDA_TRY("cudaMemcpy to the host",
                 cudaMemcpy(staging_.hostAt(offset), device_.get() + offset, bytes, cudaMemcpyDeviceToHost));
    return Status::ok();
  }
  Status finish(const char* kernel, cudaError_t launchError) {
    if (launchError != cudaSuccess) return cudaFailure(std::string("launch of ") + kernel, launchError);
    KVC_CUDA_TRY(std::string(kernel) + " kernel", cudaStreamSynchronize(stream_));
    return Status::ok();
  }

  const char* name_;
  std::mutex mutex_;  // one operation at a time: the staging buffers are shared
  uint8_t* pool_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t committed_ = 0;
  uint32_t blockBytes_ = 0;
  uint8_t* summaries_ = nullptr;  // key-summary side array (reserveSummaries)
  uint32_t summaryBytes_ = 0;
  cudaStream_t stream_ = 0;
  StagingBuffer staging_;
  DeviceBuffer device_;
  DeviceBuffer workspace_;            // attention partials and logits (never crosses to the host)
  // RoPE tables (kvc/rope.h: cos then sin) of the spec they were built for, on the device.
  DeviceBuffer ropeTables_;
  RopeSpec ropeUploaded_;
  bool ropeValid_ = false;
  static size_t ropeTableBytes(const RopeSpec& spec) {
    return static_cast<size_t>(kRopeLevels) * kRopeLevelSize * spec.dims * sizeof(float);
  }
  Status uploadRopeTables(const RopeSpec& spec) {
    if (ropeValid_ && spec.theta == ropeUploaded_.theta && spec.dims == ropeUploaded_.dims && spec.style == ropeUploaded_.style) {
      return Status::ok();
    }
    std::vector<float> c, s;
    buildRopeTables(spec, &c, &s);
    const size_t bytes = ropeTableBytes(spec);
    ropeValid_ = false;
    KVC_CUDA_TRY("cudaMalloc of the RoPE tables", ropeTables_.reserve(2 * bytes));
    KVC_CUDA_TRY("cudaMemcpy of the RoPE tables", cudaMemcpy(ropeTables_.get(), c.data(), bytes, cudaMemcpyHostToDevice));
    KVC_CUDA_TRY("cudaMemcpy of the RoPE tables", cudaMemcpy(ropeTables_.get() + bytes, s.data(), bytes, cudaMemcpyHostToDevice));
    ropeUploaded_ = spec;
    ropeValid_ = true;
    return Status::ok();
  }
  std::vector<AttentionWork> work_;
};

Status CudaBackend::append(const AppendParams& p) {
  std::lock_guard<std::mutex> lock(mutex_);
  KVC_RETURN_IF_ERROR(checkPool(p.pool));
  KVC_RETURN_IF_ERROR(validateCodec(p.codec, p.pool.layout));
  const uint32_t S = p.streamCount, T = p.tokens, D = p.codec.headDim, VD = valueWidth(p.codec), bs = p.pool.layout.blockSize;
  if (S == 0 || T == 0) return Status::ok();
  if (!p.blockTables || !p.startRow || !p.keys || !p.values || !p.positions) {
    return invalidArgument("append: blockTables, startRow, keys, values and positions are required");
  }
  {
    // Non-finite rows are rejected before anything is written: one host scan of the input,
    // which is read from host memory for the upload anyway.
    const uint64_t rows = static_cast<uint64_t>(T) * S;
    const int64_t badKey = firstNonFiniteRow(p.inputType, p.keys, rows, D);
    const int64_t badValue = firstNonFiniteRow(p.inputType, p.values, rows, VD);
    const int64_t bad = badKey < 0 ? badValue : badValue < 0 ? badKey : std::min(badKey, badValue);
    if (bad >= 0) return nonFiniteInput(bad, S);
  }
  staging_.clear();
  std::vector<TableSlice> slices(S);
  std::vector<int32_t> tables;
  for (uint32_t s = 0; s < S; ++s) {
    if (p.startRow[s] < 0) return invalidArgument("append: negative startRow");
    const uint32_t first = static_cast<uint32_t>(p.startRow[s]) / bs;
    const uint32_t last = static_cast<uint32_t>((static_cast<uint64_t>(p.startRow[s]) + T - 1) / bs);
    if (!p.blockTables[s]) return invalidArgument("append: block table is null");
    slices[s] = TableSlice{static_cast<uint32_t>(tables.size()), static_cast<int32_t>(first)};
    for (uint32_t b = first; b <= last; ++b) {
      KVC_RETURN_IF_ERROR(checkBlock(p.blockTables[s][b]));
      tables.push_back(p.blockTables[s][b]);
    }
  }
  const size_t elementBytes = p.inputType == InputType::kF32 ? 4 : 2;
  const size_t rowElements = static_cast<size_t>(T) * S * D;
  const size_t oTables = staging_.addArray(tables.data(), tables.size());
  const size_t oSlices = staging_.addArray(slices.data(), S);
  const size_t oStart = staging_.addArray(p.startRow, S);
  const size_t oKeys = staging_.add(p.keys, rowElements * elementBytes);
  const size_t oValues = staging_.add(p.values, static_cast<size_t>(T) * S * VD * elementBytes);
  const size_t oPositions = staging_.addArray(p.positions, T);
  const size_t oBeta = p.beta ? staging_.addArray(p.beta, static_cast<size_t>(T) * S) : SIZE_MAX;
  const size_t oKeySigns = stageSigns(p.codec.keySigns, D), oValueSigns = stageSigns(p.codec.valueSigns, D);
  KVC_RETURN_IF_ERROR(reserveDevice());
  KVC_RETURN_IF_ERROR(upload(staging_.size()));

  AppendArgs a;
  a.pool = p.pool;
  a.codec = p.codec;
  a.codec.keySigns = deviceSigns(oKeySigns);
  a.codec.valueSigns = deviceSigns(oValueSigns);
  a.streamCount = S;
  a.tokens = T;
  a.tables = device_.at<const int32_t>(oTables);
  a.slices = device_.at<const TableSlice>(oSlices);
  a.startRow = device_.at<const int32_t>(oStart);
  a.inputType = p.inputType;
  a.keys = device_.at<const void>(oKeys);
  a.values = device_.at<const void>(oValues);
  a.positions = device_.at<const int32_t>(oPositions);
  a.beta = oBeta == SIZE_MAX ? nullptr : device_.at<const float>(oBeta);
  return finish("append", launchAppend(a, stream_));
}

Status CudaBackend::attention(const AttentionParams& p) {
  std::lock_guard<std::mutex> lock(mutex_);
  KVC_RETURN_IF_ERROR(checkPool(p.pool));
  KVC_RETURN_IF_ERROR(validateCodec(p.codec, p.pool.layout));
  // Outputs are value rows: valueWidth floats per query head (headDim unless the codec's value
  // rows have their own width); queries and outputs share tokenStride.
  const uint32_t S = p.streamCount, G = p.queriesPerHead, tq = p.tq, D = p.codec.headDim, VD = valueWidth(p.codec);
  const uint32_t bs = p.pool.layout.blockSize;
  if (S == 0 || tq == 0) return Status::ok();
  const RopeSpec& rope = p.rope.spec;
  // Query width: the lifted width when low-rank key rows are lifted (p.liftDim), else the key rows'.
  const uint32_t QD = p.liftDim ? p.liftDim : D;
  if (QD > kMaxHeadDim) return invalidArgument("attention: liftDim must be in [1, 1024], got " + std::to_string(QD));
  if (p.liftDim && p.codec.keySigns) return unsupported("cuda attention: lifted low-rank keys with rotated keys");
  // A tile's coefficients and lifted keys sit in shared memory (up to 32 rows of D + QD floats):
  // keep them within 96 KiB, which leaves room for the pipeline stages on sm_80 and sm_90.
  if (p.liftDim && 32ull * (D + QD) * sizeof(float) > 96 * 1024) {
    return unsupported("cuda attention: lifted low-rank keys need headDim + rank <= 768, got " + std::to_string(QD) + " + " +
                       std::to_string(D));
  }
  // The lifted kernel keeps 256 value floats per query row in registers (attention.cu).
  if (p.liftDim && VD > 256) {
    return unsupported("cuda attention: lifted low-rank keys need value rows of at most 256 floats, got " + std::to_string(VD));
  }
  if (rope.dims != 0 && (rope.dims > QD || rope.dims % 2 != 0)) return invalidArgument("attention: rope.dims must be even and <= headDim");
  if (rope.dims != 0 && !rope.byRank && !p.streams[0].queryPositions) {
    return invalidArgument("attention: rope with stored positions needs the query positions");
  }
  if (!p.streams || G == 0) return invalidArgument("attention: streams and queriesPerHead are required");
  if (!attentionSupportsHeadDim(D)) {
    return unsupported("cuda attention supports headDim 1 to 1024, got " + std::to_string(D));
  }
  if (tq > 65535 || S > 0x7FFFFFFFu) return invalidArgument("attention: tq must be <= 65535");
  const uint64_t M = static_cast<uint64_t>(tq) * G;
  if (p.tokenStride < static_cast<uint64_t>(G) * std::max(QD, VD) && tq > 1) return invalidArgument("attention: tokenStride too small");
  if (VD != D && rope.dims != 0 && !p.liftDim) {
    return unsupported("cuda attention: rope with value rows of another width than key rows needs lifted keys (liftDim)");
  }

  staging_.clear();
  const size_t headFloats = static_cast<size_t>(G) * QD, outFloats = static_cast<size_t>(G) * VD;
  std::vector<size_t> tableOffsets(S);
  // Splits of kAttentionSplitRows rows, stream by stream (one empty split for an empty stream).
  work_.clear();
  std::vector<uint32_t> firstWork(S);
  uint64_t logitFloats = 0;
  std::vector<uint64_t> logitOffsets(S, UINT64_MAX);
  for (uint32_t s = 0; s < S; ++s) {
    const int32_t length = std::max(p.streams[s].kv.length, 0);
    firstWork[s] = static_cast<uint32_t>(work_.size());
    for (uint32_t i = 0; i < attentionSplits(length); ++i) {
      const int64_t begin = static_cast<int64_t>(i) * kAttentionSplitRows;
      work_.push_back(AttentionWork{s, static_cast<int32_t>(begin),
                                    static_cast<int32_t>(std::min<int64_t>(length, begin + kAttentionSplitRows))});
    }
    if (p.streams[s].scores) {
      logitOffsets[s] = logitFloats;
      logitFloats += M * static_cast<uint64_t>(length);
    }
  }
  // Lifted keys and rows of two widths run on the generic head_dim class (attentionQueryTile(0);
  // the lifted class's tile is larger, so this bound is conservative).
  const uint32_t queryTile = attentionQueryTile(p.liftDim || VD != D ? 0 : D);
  const uint64_t queryTiles = (M + queryTile - 1) / queryTile;
  if (work_.size() * queryTiles > 0x7FFFFFFFull || S * ((M + 3) / 4) > 0x7FFFFFFFull) {
    return invalidArgument("attention: too many streams x query rows for one launch");
  }
  for (uint32_t s = 0; s < S; ++s) {
    const AttentionStream& st = p.streams[s];
    if (st.kv.length < 0) return invalidArgument("attention: negative stream length");
    if (!st.queries || !st.out) return invalidArgument("attention: queries and out are required per stream");
    if ((st.queryPositions == nullptr) != (p.streams[0].queryPositions == nullptr)) {
      return invalidArgument("attention: queryPositions must be given for every stream or for none");
    }
    KVC_RETURN_IF_ERROR(stageTable(st.kv.blockTable, 0, blocksFor(static_cast<uint32_t>(st.kv.length), bs), &tableOffsets[s]));
    if (p.liftDim && !st.keyBasis) return invalidArgument("attention: liftDim needs every stream's keyBasis");
  }
  // Key bases of lifted streams, transposed to [headDim][liftDim] so that the threads lifting
  // consecutive channels read consecutive floats.
  std::vector<size_t> basisOffsets(S, SIZE_MAX);
  if (p.liftDim) {
    std::vector<float> transposed(static_cast<size_t>(D) * QD);
    for (uint32_t s = 0; s < S; ++s) {
      for (uint32_t d = 0; d < QD; ++d) {
        for (uint32_t j = 0; j < D; ++j) transposed[static_cast<size_t>(j) * QD + d] = p.streams[s].keyBasis[static_cast<size_t>(d) * D + j];
      }
      basisOffsets[s] = staging_.addArray(transposed.data(), transposed.size());
    }
  }
  // Without explicit cutoffs the kernel reads the positions of each stream's last tq rows
  // from the pool itself (the usual case), saving a host round trip.
  const bool explicitPositions = S > 0 && p.streams[0].queryPositions != nullptr;
  size_t oQueryPositions = SIZE_MAX;
  if (explicitPositions) {
    std::vector<int32_t> queryPositions(static_cast<size_t>(S) * tq);
    for (uint32_t s = 0; s < S; ++s) std::memcpy(&queryPositions[s * tq], p.streams[s].queryPositions, tq * sizeof(int32_t));
    oQueryPositions = staging_.addArray(queryPositions.data(), queryPositions.size());
  }
  const size_t oQueries = staging_.add(nullptr, static_cast<size_t>(S) * tq * headFloats * sizeof(float));
  RopeRotator rotator(rope);
  for (uint32_t s = 0; s < S; ++s) {
    for (uint32_t t = 0; t < tq; ++t) {
      float* staged = reinterpret_cast<float*>(staging_.hostAt(oQueries) + ((static_cast<size_t>(s) * tq + t) * headFloats) * sizeof(float));
      std::memcpy(staged, p.streams[s].queries + t * p.tokenStride, headFloats * sizeof(float));
      if (rope.dims != 0) {
        // Queries get RoPE at their own position on the host (in double, each token's angles once).
        const AttentionStream& st = p.streams[s];
        const int32_t first = st.firstQueryRow >= 0 ? st.firstQueryRow : st.kv.length - static_cast<int32_t>(tq);
        const int64_t position = rope.byRank ? first + static_cast<int64_t>(t) : st.queryPositions[t];
        for (uint32_t g = 0; g < G; ++g) rotator.rotate(staged + static_cast<size_t>(g) * QD, position);
      }
    }
  }
  if (rope.dims != 0) KVC_RETURN_IF_ERROR(uploadRopeTables(rope));
  const size_t oKeySigns = stageSigns(p.codec.keySigns, D), oValueSigns = stageSigns(p.codec.valueSigns, D);
  const size_t oStreams = staging_.add(nullptr, S * sizeof(AttentionStreamArgs));
  const size_t oWork = staging_.addArray(work_.data(), work_.size());
  // Outputs last, so one copy brings them all back.
  const size_t oOut = staging_.add(nullptr, static_cast<size_t>(S) * tq * outFloats * sizeof(float));
  const size_t oLse = staging_.add(nullptr, static_cast<size_t>(S) * tq * G * sizeof(float));
  std::vector<size_t> scoreOffsets(S, SIZE_MAX);
  for (uint32_t s = 0; s < S; ++s) {
    if (p.streams[s].scores) scoreOffsets[s] = staging_.addArray(p.streams[s].scores, static_cast<size_t>(p.streams[s].kv.length));
  }
  KVC_RETURN_IF_ERROR(reserveDevice());
  // Scratch the kernels write and read back themselves: partial softmax states of every
  // split, and the logits of scored streams (attention mass needs the final lse).
  const uint64_t partialFloats = static_cast<uint64_t>(work_.size()) * M * (VD + 2);
  KVC_CUDA_TRY("cudaMalloc of the attention workspace", workspace_.reserve((partialFloats + logitFloats) * sizeof(float)));
  auto* streams = reinterpret_cast<AttentionStreamArgs*>(staging_.hostAt(oStreams));
  for (uint32_t s = 0; s < S; ++s) {
    streams[s].blockTable = device_.at<const int32_t>(tableOffsets[s]);
    streams[s].length = p.streams[s].kv.length;
    streams[s].firstWork = firstWork[s];
    streams[s].workCount = (s + 1 < S ? firstWork[s + 1] : static_cast<uint32_t>(work_.size())) - firstWork[s];
    streams[s].scores = scoreOffsets[s] == SIZE_MAX ? nullptr : device_.at<float>(scoreOffsets[s]);
    streams[s].logits = logitOffsets[s] == UINT64_MAX ? nullptr : workspace_.at<float>((partialFloats + logitOffsets[s]) * sizeof(float));
    streams[s].keyBasisT = basisOffsets[s] == SIZE_MAX ? nullptr : device_.at<const float>(basisOffsets[s]);
  }
  KVC_RETURN_IF_ERROR(upload(staging_.size()));

  AttentionArgs a;
  a.pool = p.pool;
  a.codec = p.codec;
  a.codec.keySigns = deviceSigns(oKeySigns);
  a.codec.valueSigns = deviceSigns(oValueSigns);
  a.streamCount = S;
  a.queriesPerHead = G;
  a.tq = tq;
  a.scale = p.scale;
  a.streams = device_.at<const AttentionStreamArgs>(oStreams);
  a.queryPositions = explicitPositions ? device_.at<const int32_t>(oQueryPositions) : nullptr;
  a.queries = device_.at<const float>(oQueries);
  a.out = device_.at<float>(oOut);
  a.lse = device_.at<float>(oLse);
  a.work = device_.at<const AttentionWork>(oWork);
  a.workCount = static_cast<uint32_t>(work_.size());
  a.partials = workspace_.at<float>(0);
  a.anyScores = logitFloats > 0;
  a.liftDim = p.liftDim;
  if (rope.dims != 0) {
    a.ropeDims = rope.dims;
    a.ropeStyle = rope.style;
    a.ropeByRank = rope.byRank;
    a.ropeCos = ropeTables_.at<const float>(0);
    a.ropeSin = ropeTables_.at<const float>(ropeTableBytes(rope));
  }
  KVC_RETURN_IF_ERROR(finish("attention", launchAttention(a, stream_)));
  KVC_RETURN_IF_ERROR(download(oOut, staging_.size() - oOut));

  for (uint32_t s = 0; s < S; ++s) {
    const AttentionStream& st = p.streams[s];
    for (uint32_t t = 0; t < tq; ++t) {
      const size_t head = static_cast<size_t>(s) * tq + t;
      std::memcpy(st.out + t * p.tokenStride, staging_.hostAt(oOut) + head * outFloats * sizeof(float),
                  outFloats * sizeof(float));
      if (st.lse) {
        std::memcpy(st.lse + t * p.lseTokenStride, staging_.hostAt(oLse) + head * G * sizeof(float), G * sizeof(float));
      }
    }
    if (st.scores) std::memcpy(st.scores, staging_.hostAt(scoreOffsets[s]), st.kv.length * sizeof(float));
  }
  return Status::ok();
}

Status CudaBackend::copyBlocks(const PoolView& pool, const int32_t* src, const int32_t* dst, uint32_t count) {
  std::lock_guard<std::mutex> lock(mutex_);
  KVC_RETURN_IF_ERROR(checkPool(pool));
  if (count == 0) return Status::ok();
  if (!src || !dst) return invalidArgument("copyBlocks: src and dst are required");
  staging_.clear();
  size_t oSrc = 0, oDst = 0;
  KVC_RETURN_IF_ERROR(stageTable(src, 0, count, &oSrc));
  KVC_RETURN_IF_ERROR(stageTable(dst, 0, count, &oDst));
  KVC_RETURN_IF_ERROR(reserveDevice());
  KVC_RETURN_IF_ERROR(upload(staging_.size()));
  KVC_RETURN_IF_ERROR(finish("copyBlocks", launchCopyBlocks(pool_, blockBytes_, device_.at<const int32_t>(oSrc),
                                                            device_.at<const int32_t>(oDst), count, stream_)));
  if (!pool.summaries) return Status::ok();
  return finish("copyBlocks (summaries)", launchCopyBlocks(summaries_, summaryBytes_, device_.at<const int32_t>(oSrc),
                                                           device_.at<const int32_t>(oDst), count, stream_));
}

Status CudaBackend::readRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                             uint32_t count, float* keys, float* values, float* beta, int32_t* positions) {
  std::lock_guard<std::mutex> lock(mutex_);
  KVC_RETURN_IF_ERROR(checkPool(pool));
  KVC_RETURN_IF_ERROR(validateCodec(codec, pool.layout));
  if (count == 0) return Status::ok();
  const uint32_t D = codec.headDim, VD = valueWidth(codec);
  uint32_t first = 0;
  size_t oTable = 0;
  KVC_RETURN_IF_ERROR(stageRowRange("readRows", stream, start, count, pool.layout.blockSize, &first, &oTable));
  const size_t oKeySigns = stageSigns(codec.keySigns, D), oValueSigns = stageSigns(codec.valueSigns, D);
  const size_t uploadBytes = staging_.size();
  const size_t oKeys = staging_.add(nullptr, static_cast<size_t>(count) * D * sizeof(float));
  const size_t oValues = staging_.add(nullptr, static_cast<size_t>(count) * VD * sizeof(float));
  const size_t oBeta = staging_.add(nullptr, count * sizeof(float));
  const size_t oPositions = staging_.add(nullptr, count * sizeof(int32_t));
  KVC_RETURN_IF_ERROR(reserveDevice());
  KVC_RETURN_IF_ERROR(upload(uploadBytes));

  ReadRowsArgs a;
  a.pool = pool;
  a.codec = codec;
  a.codec.keySigns = deviceSigns(oKeySigns);
  a.codec.valueSigns = deviceSigns(oValueSigns);
  a.blockTable = device_.at<const int32_t>(oTable);
  a.firstBlock = static_cast<int32_t>(first);
  a.start = start;
  a.count = count;
  a.keys = keys ? device_.at<float>(oKeys) : nullptr;
  a.values = values ? device_.at<float>(oValues) : nullptr;
  a.beta = beta ? device_.at<float>(oBeta) : nullptr;
  a.positions = positions ? device_.at<int32_t>(oPositions) : nullptr;
  KVC_RETURN_IF_ERROR(finish("readRows", launchReadRows(a, stream_)));
  KVC_RETURN_IF_ERROR(download(oKeys, staging_.size() - oKeys));
  if (keys) std::memcpy(keys, staging_.hostAt(oKeys), static_cast<size_t>(count) * D * sizeof(float));
  if (values) std::memcpy(values, staging_.hostAt(oValues), static_cast<size_t>(count) * VD * sizeof(float));
  if (beta) std::memcpy(beta, staging_.hostAt(oBeta), count * sizeof(float));
  if (positions) std::memcpy(positions, staging_.hostAt(oPositions), count * sizeof(int32_t));
  return Status::ok();
}

Status CudaBackend::gatherRows(const PoolView& pool, const StreamView& src, const int32_t* srcRows, uint32_t count,
                               const StreamView& dst, uint32_t dstStart) {
  std::lock_guard<std::mutex> lock(mutex_);
  KVC_RETURN_IF_ERROR(checkPool(pool));
  if (count == 0) return Status::ok();
  if (!srcRows) return invalidArgument("gatherRows: srcRows is required");
  const BlockLayout& L = pool.layout;
  if (L.blockSize == 0 || L.keyRowBytes % 4 || L.valueRowBytes % 4) return shapeMismatch("gatherRows: bad block layout");
  for (uint32_t i = 0; i < count; ++i) {
    if (srcRows[i] < 0 || srcRows[i] >= src.length) {
      return invalidArgument("gatherRows: srcRows[" + std::to_string(i) + "] = " + std::to_string(srcRows[i]) +
                             " is outside the source stream of length " + std::to_string(src.length));
    }
  }
  // The destination table must already hold every block the new rows land in.
  staging_.clear();
  size_t oSrcTable = 0, oDstTable = 0;
  KVC_RETURN_IF_ERROR(stageTable(src.blockTable, 0, blocksFor(static_cast<uint32_t>(src.length), L.blockSize), &oSrcTable));
  KVC_RETURN_IF_ERROR(stageTable(dst.blockTable, 0, blocksFor(uint64_t(dstStart) + count, L.blockSize), &oDstTable));
  const size_t oRows = staging_.addArray(srcRows, count);
  const uint32_t rowWords = (L.keyRowBytes + L.valueRowBytes) / 4 + 2;
  const size_t uploadBytes = staging_.size();
  const size_t oRowStaging = staging_.add(nullptr, static_cast<size_t>(count) * rowWords * 4);
  KVC_RETURN_IF_ERROR(reserveDevice());
  KVC_RETURN_IF_ERROR(upload(uploadBytes));

  GatherArgs a;
  a.pool = pool;
  a.srcTable = device_.at<const int32_t>(oSrcTable);
  a.srcRows = device_.at<const int32_t>(oRows);
  a.dstTable = device_.at<const int32_t>(oDstTable);
  a.dstStart = dstStart;
  a.count = count;
  a.staging = device_.at<uint32_t>(oRowStaging);
  a.rowWords = rowWords;
  return finish("gatherRows", launchGatherRows(a, stream_));
}

Status CudaBackend::rewriteRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                                uint32_t count, const float* values, const float* beta) {
  std::lock_guard<std::mutex> lock(mutex_);
  KVC_RETURN_IF_ERROR(checkPool(pool));
  KVC_RETURN_IF_ERROR(validateCodec(codec, pool.layout));
  if (count == 0 || (!values && !beta)) return Status::ok();
  const uint32_t D = valueWidth(codec);  // only value rows are rewritten
  uint32_t first = 0;
  size_t oTable = 0;
  KVC_RETURN_IF_ERROR(stageRowRange("rewriteRows", stream, start, count, pool.layout.blockSize, &first, &oTable));
  // Keys are not rewritten, so only the value signs travel.
  const size_t oValueSigns = values ? stageSigns(codec.valueSigns, D) : SIZE_MAX;
  const size_t oValues = values ? staging_.addArray(values, static_cast<size_t>(count) * D) : SIZE_MAX;
  const size_t oBeta = beta ? staging_.addArray(beta, count) : SIZE_MAX;
  KVC_RETURN_IF_ERROR(reserveDevice());
  KVC_RETURN_IF_ERROR(upload(staging_.size()));

  RewriteRowsArgs a;
  a.pool = pool;
  a.codec = codec;
  a.codec.keySigns = nullptr;
  a.codec.valueSigns = deviceSigns(oValueSigns);
  a.blockTable = device_.at<const int32_t>(oTable);
  a.firstBlock = static_cast<int32_t>(first);
  a.start = start;
  a.count = count;
  a.values = oValues == SIZE_MAX ? nullptr : device_.at<const float>(oValues);
  a.beta = oBeta == SIZE_MAX ? nullptr : device_.at<const float>(oBeta);
  return finish("rewriteRows", launchRewriteRows(a, stream_));
}

}  // namespace

std::unique_ptr<Backend> makeBackend(const char* name) { return std::unique_ptr<Backend>(new CudaBackend(name)); }

KVC_CUDA_NAMESPACE_END
