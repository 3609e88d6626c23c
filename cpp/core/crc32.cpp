// Slicing-by-8 table CRC-32 (1-2 GB/s per core, no CPU-specific instructions) and the
// once-per-process choice between it and the carry-less-multiply folding of crc32_clmul.cpp
// (an order of magnitude faster: import and PrefixStore verify every byte they read).
#include "crc32.h"

#include <array>
#include <cstdlib>
#include <cstring>

#include "crc32_clmul.h"

namespace kvc {

namespace {

struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};

const Tables& tables() {
  static const Tables instance;
  return instance;
}

using Crc32Fn = uint32_t (*)(uint32_t, const uint8_t*, size_t);

struct Choice {
  Crc32Fn fn = crc32UpdateTable;
  const char* name = "table";
  Choice() {
    // The caps of cpu_features.cpp: portable = no vector code, avx2 = nothing of AVX-512.
    const char* cap = std::getenv("KVCOMPACT_SIMD");
    if (cap && std::strcmp(cap, "portable") == 0) return;
    const bool capped = cap && std::strcmp(cap, "avx2") == 0;
    if (crc32VpclmulAvailable() && !capped) {
      fn = crc32UpdateVpclmul, name = "vpclmul";
    } else if (crc32PclmulAvailable()) {
      fn = crc32UpdatePclmul, name = "pclmul";
    }
  }
};

const Choice& choice() {
  static const Choice instance;
  return instance;
}

}  // namespace

uint32_t crc32RawTable(uint32_t crc, const uint8_t* p, size_t n) {
  const auto& t = tables().t;
  while (n >= 8) {
    const uint32_t lo = (static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24) ^ crc;
    const uint32_t hi = static_cast<uint32_t>(p[4]) | static_cast<uint32_t>(p[5]) << 8 |
                        static_cast<uint32_t>(p[6]) << 16 | static_cast<uint32_t>(p[7]) << 24;
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return crc;
}

uint32_t crc32UpdateTable(uint32_t crc, const uint8_t* p, size_t n) { return ~crc32RawTable(~crc, p, n); }

uint32_t crc32Update(uint32_t crc, const uint8_t* p, size_t n) { return choice().fn(crc, p, n); }

const char* crc32Implementation() { return choice().name; }

}  // namespace kvc
