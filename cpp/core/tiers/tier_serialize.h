// Export format version 4: a sequence of a cache with precision tiers (docs/kvc-format.md).
// The header and the row checks are those of versions 1-3, shared by serialize.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../config.h"

namespace kvc {

constexpr uint32_t kTieredFormatVersion = 4;

// Defined in serialize.cpp: the magic, version, header size and config fields of every version.
void writeSequenceHeader(const CacheConfig& c, uint32_t version, uint32_t headerBytes, std::vector<uint8_t>* out);
// Bytes of that header (magic through the config fields).
uint32_t sequenceHeaderBytes();
// The config fields at `fields` against this cache's (shape, formats, groupSize, rotation).
Status checkSequenceFields(const CacheConfig& c, const uint8_t* fields);
// What import checks of encoded rows before storing them (finite elements, scales and beta,
// positions in range), for streams of `lengths` rows laid out as versions 1-3 lay them out;
// with crc, the rows' bytes are added to the running CRC-32 *crc in the same pass.
Status validateEncodedRows(const CacheConfig& c, const std::vector<int32_t>& lengths, const uint8_t* bytes, size_t size,
                           uint32_t* crc = nullptr);

}  // namespace kvc
