// CRC-32 (IEEE 802.3, reflected, as zlib computes it) for the export format's checksum.
// crc32Update picks, once per process, carry-less-multiply folding where the CPU has it
// (x86-64 PCLMULQDQ, or VPCLMULQDQ with AVX-512) and the portable slicing-by-8 table
// otherwise; KVCOMPACT_SIMD=portable forces the table and =avx2 rules out AVX-512.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kvc {

uint32_t crc32Update(uint32_t crc, const uint8_t* data, size_t size);
inline uint32_t crc32(const uint8_t* data, size_t size) { return crc32Update(0, data, size); }

// The portable implementation (slicing-by-8), whatever the CPU: the fallback, and what the
// folding is checked against.
uint32_t crc32UpdateTable(uint32_t crc, const uint8_t* data, size_t size);
// Register update without the initial and final inversions (state in, state out), for the
// folding's head and tail.
uint32_t crc32RawTable(uint32_t state, const uint8_t* data, size_t size);

// "vpclmul", "pclmul" or "table": what crc32Update uses in this process.
const char* crc32Implementation();

}  // namespace kvc
