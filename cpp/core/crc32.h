// CRC-32 (IEEE 802.3, reflected, as zlib computes it) for the export format's checksum.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kvc {

uint32_t crc32Update(uint32_t crc, const uint8_t* data, size_t size);
inline uint32_t crc32(const uint8_t* data, size_t size) { return crc32Update(0, data, size); }

}  // namespace kvc
