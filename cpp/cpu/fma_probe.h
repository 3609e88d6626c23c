// The machine's peak f32 multiply-add rate on one thread, with the widest vectors the attention
// kernels use here: the arithmetic floor the benchmarks set beside the read-bandwidth floor
// (exact f32 attention at GQA g costs 2 * g * headDim multiply-adds per row, whatever the
// storage format).
#pragma once
#include <cstdint>

namespace kvc::cpu {

struct FmaProbe {
  uint64_t multiplyAdds = 0;  // lane multiply-adds executed
  uint32_t lanes = 0;         // f32 lanes per vector FMA (16 AVX-512, 8 AVX2, 1 scalar)
  float checksum = 0.0f;      // keeps the loop from being optimized away
};

// Runs `iterations` rounds of 12 independent vector FMA chains; the caller times it.
FmaProbe fmaProbe(uint64_t iterations);

}  // namespace kvc::cpu
