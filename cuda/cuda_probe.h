// Device measurements for benchmarks (npm run gpu-check): the copy bandwidth of the GPU the
// CUDA backend runs on, the floor that decode attention is compared against. Not used by
// any cache operation. Implemented by cuda/backend/cuda_probe.cu (nvcc build) and
// cuda/cuda_stub.cpp (builds without CUDA, where it reports kCudaUnavailable).
#pragma once
#include <cstdint>

#include "kvc/status.h"

namespace kvc {

struct CopyBandwidth {
  uint64_t bytes = 0;          // size of one cudaMemcpy device-to-device
  uint32_t repeats = 0;        // timed copies (after one untimed warm-up copy)
  double milliseconds = 0;     // median time of one copy (cudaEvent timing)
  double copyGBps = 0;         // bytes / median time: what bandwidthTest calls D2D bandwidth / 2
  double memoryGBps = 0;       // 2 × bytes / median time: DRAM traffic (each byte read and written)
};

// Times `repeats` copies of `bytes` between two device buffers on device 0. Errors (no
// device, out of memory) come back as a Status; nothing aborts.
Status measureCudaCopyBandwidth(uint64_t bytes, uint32_t repeats, CopyBandwidth* out);

}  // namespace kvc
