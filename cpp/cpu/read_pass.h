// One streaming read over a buffer, split across threads: the machine's read-bandwidth
// floor that the benchmarks compare the attention kernels against.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kvc::cpu {

// XOR of every 64-bit word (so the reads cannot be optimized away); `threads` >= 1.
uint64_t readPass(const uint8_t* data, size_t bytes, uint32_t threads);

}  // namespace kvc::cpu
