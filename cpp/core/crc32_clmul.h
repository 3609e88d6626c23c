// CRC-32 by carry-less multiplication (x86-64), used by crc32.cpp when the CPU has it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kvc {

// Whether this build and CPU can run crc32UpdatePclmul (PCLMULQDQ, 16-byte blocks) and
// crc32UpdateVpclmul (AVX-512 VPCLMULQDQ, four blocks per instruction).
bool crc32PclmulAvailable();
bool crc32VpclmulAvailable();
// Same results as crc32UpdateTable for every input; call only when available.
uint32_t crc32UpdatePclmul(uint32_t crc, const uint8_t* data, size_t size);
uint32_t crc32UpdateVpclmul(uint32_t crc, const uint8_t* data, size_t size);

}  // namespace kvc
