// One streaming read over a buffer, split across threads: the machine's read-bandwidth
// floor that the benchmarks compare the attention kernels against.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kvc::cpu {

// XOR of every 64-bit word (so the reads cannot be optimized away; a partial last word is
// folded in byte by byte); `threads` >= 1.
uint64_t readPass(const uint8_t* data, size_t bytes, uint32_t threads);

// The read floor itself: the median bytes per second of `runs` passes (after one warm pass)
// over `bytes` of memory mapped the way the block pool is (PoolMemory: transparent huge pages
// where the OS offers them). A buffer of 4 KiB pages reads about 20% slower on some machines
// (TLB walks), which would flatter every kernel measured against it. 0 if the memory cannot
// be had.
double readFloorBytesPerSecond(uint64_t bytes, uint32_t threads, uint32_t runs);

}  // namespace kvc::cpu
