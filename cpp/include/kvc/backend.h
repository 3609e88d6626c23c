// The backend interface (implemented by cpp/cpu and cuda/, driven by cpp/core): owns the block pool memory and runs the row operations on it.
// The core (block pool, sequences, policies) decides *which* rows and blocks; a backend
// decides *how* bytes are written and read. CPU and CUDA implement the same set.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "kvc/status.h"
#include "kvc/views.h"

namespace kvc {

struct BackendOptions {
  uint32_t threads = 0;  // CPU worker threads; 0 = hardware concurrency
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Reserves address space (or device memory) for `capacityBlocks` blocks of `blockBytes`;
  // nothing needs to be committed yet. Called once.
  virtual Status reservePool(uint64_t capacityBlocks, uint32_t blockBytes) = 0;
  // Makes blocks [0, blocks) usable; never shrinks. Fails with OUT_OF_MEMORY and no change.
  virtual Status commitPool(uint64_t blocks) = 0;
  virtual uint8_t* poolBase() = 0;
  // Bytes of pool memory committed (resident or device-allocated).
  virtual uint64_t committedBytes() const = 0;

  virtual Status append(const AppendParams& params) = 0;
  virtual Status attention(const AttentionParams& params) = 0;
  // Copies whole blocks src[i] -> dst[i] (copy-on-write of a shared partial block).
  virtual Status copyBlocks(const PoolView& pool, const int32_t* src, const int32_t* dst, uint32_t count) = 0;
  // Decodes rows [start, start + count) of one stream into host f32 / i32 arrays
  // (keys and values [count][headDim], beta and positions [count]); any may be nullptr.
  virtual Status readRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream,
                          uint32_t start, uint32_t count, float* keys, float* values, float* beta,
                          int32_t* positions) = 0;
  // Moves rows bit-exactly: row i of the destination stream (starting at dstStart) is row
  // srcRows[i] of the source stream. Quantized rows are not requantized.
  virtual Status gatherRows(const PoolView& pool, const StreamView& src, const int32_t* srcRows,
                            uint32_t count, const StreamView& dst, uint32_t dstStart) = 0;
  // Re-encodes existing rows [start, start + count) of a stream: new values (f32
  // [count][headDim] in the original space; rotated and quantized exactly as append does)
  // and/or new beta [count]; nullptr leaves that part as it is. Keys are never rewritten.
  // Required: compaction applies its keep sets before it rewrites, so a backend that could
  // not rewrite would leave a half-compacted sequence.
  virtual Status rewriteRows(const PoolView& pool, const RowCodec& codec, const StreamView& stream, uint32_t start,
                             uint32_t count, const float* values, const float* beta) = 0;
  // Raw encoded rows for serialization: keys [count][keyRowBytes], values
  // [count][valueRowBytes], beta [count], positions [count] (host memory), bit-exact.
  virtual Status readRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                             uint8_t* keyRows, uint8_t* valueRows, float* beta, int32_t* positions) {
    (void)pool, (void)stream, (void)start, (void)count, (void)keyRows, (void)valueRows, (void)beta, (void)positions;
    return unsupported(std::string("readRawRows is not implemented by the ") + name() + " backend");
  }
  virtual Status writeRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                              const uint8_t* keyRows, const uint8_t* valueRows, const float* beta,
                              const int32_t* positions) {
    (void)pool, (void)stream, (void)start, (void)count, (void)keyRows, (void)valueRows, (void)beta, (void)positions;
    return unsupported(std::string("writeRawRows is not implemented by the ") + name() + " backend");
  }
};

std::unique_ptr<Backend> createCpuBackend(const BackendOptions& options);

// Describes the CUDA backend on this machine: compiled in or not, and usable or not.
struct CudaInfo {
  bool compiled = false;
  bool available = false;
  std::string reason;       // why not available
  std::string deviceName;
  int deviceCount = 0;
  int runtimeVersion = 0;
  int driverVersion = 0;
  uint64_t totalMemory = 0;
  int computeCapability = 0;  // major * 10 + minor
};
CudaInfo queryCuda();
// Returns nullptr with `status` set when CUDA is not available.
std::unique_ptr<Backend> createCudaBackend(const BackendOptions& options, Status* status);

}  // namespace kvc
