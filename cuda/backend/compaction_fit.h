// The fitted rows of a compactStreams call as the CUDA backend keeps them: device memory (one
// allocation per device batch) holding, per stream, the fitted values [rows, valueDim] in the
// original space, the fitted beta [rows] and the changed-row flags [rows].
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "device_memory.h"
#include "kvc/backend.h"

KVC_CUDA_NAMESPACE_BEGIN

class CudaCompactionFit final : public CompactionFit {
 public:
  struct Stream {
    uint32_t rows = 0;
    uint32_t piece = 0;                        // which allocation (one per device batch)
    size_t values = 0, beta = 0, changed = 0;  // offsets in it
  };
  uint64_t bytes() const override {
    uint64_t total = 0;
    for (const auto& p : pieces) total += p->bytes();
    return total;
  }
  const DeviceMemory& memory(const Stream& s) const { return *pieces[s.piece]; }
  std::vector<std::unique_ptr<DeviceMemory>> pieces;
  std::vector<Stream> streams;
  uint32_t headDim = 0;
  uint32_t valueDim = 0;  // floats per fitted value row (the codec's value width)
};

// Every block id of a table lies in the committed pool.
inline Status checkTable(const int32_t* table, uint32_t blocks, uint64_t committed, const std::string& what) {
  for (uint32_t b = 0; b < blocks; ++b)
    if (table[b] < 0 || static_cast<uint64_t>(table[b]) >= committed)
      return invalidArgument(what + ": block id " + std::to_string(table[b]) + " is outside the committed pool");
  return Status::ok();
}

KVC_CUDA_NAMESPACE_END
