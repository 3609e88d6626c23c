// See read_pass.h. Eight independent accumulators keep enough loads in flight that the
// loop is bound by memory, not by the dependency chain; with AVX-512 they are 512-bit
// registers (one cache line per load), the strongest read loop this machine runs, so the
// floor the kernels are compared against is what the hardware delivers.
#include "read_pass.h"

#include <immintrin.h>

#include <cstring>
#include <thread>
#include <vector>

#include "cpu_features.h"
#include "isa_region.h"

namespace kvc::cpu {

namespace {

uint64_t xorRangeScalar(const uint8_t* p, size_t bytes) {
  uint64_t acc[8] = {};
  const size_t words = bytes / 8;
  const size_t blocks = words / 8;
  for (size_t b = 0; b < blocks; ++b) {
    uint64_t w[8];
    std::memcpy(w, p + b * 64, 64);
    for (int i = 0; i < 8; ++i) acc[i] ^= w[i];
  }
  uint64_t x = 0;
  for (int i = 0; i < 8; ++i) x ^= acc[i];
  for (size_t i = blocks * 64; i < bytes; ++i) x ^= p[i];
  return x;
}

#ifdef KVC_ISA_REGIONS
KVC_ISA_REGION_BEGIN("avx512f")
// Eight 512-bit accumulators, 512 bytes per iteration.
uint64_t xorRangeAvx512(const uint8_t* p, size_t bytes) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const size_t blocks = bytes / 512;
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* q = p + b * 512;
    a0 = _mm512_xor_si512(a0, _mm512_loadu_si512(q));
    a1 = _mm512_xor_si512(a1, _mm512_loadu_si512(q + 64));
    a2 = _mm512_xor_si512(a2, _mm512_loadu_si512(q + 128));
    a3 = _mm512_xor_si512(a3, _mm512_loadu_si512(q + 192));
    a4 = _mm512_xor_si512(a4, _mm512_loadu_si512(q + 256));
    a5 = _mm512_xor_si512(a5, _mm512_loadu_si512(q + 320));
    a6 = _mm512_xor_si512(a6, _mm512_loadu_si512(q + 384));
    a7 = _mm512_xor_si512(a7, _mm512_loadu_si512(q + 448));
  }
  const __m512i x = _mm512_xor_si512(_mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3)),
                                     _mm512_xor_si512(_mm512_xor_si512(a4, a5), _mm512_xor_si512(a6, a7)));
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, x);
  uint64_t r = 0;
  for (uint64_t l : lanes) r ^= l;
  return r ^ xorRangeScalar(p + blocks * 512, bytes - blocks * 512);
}
KVC_ISA_REGION_END
#endif

uint64_t xorRange(const uint8_t* p, size_t bytes) {
#ifdef KVC_ISA_REGIONS
  if (cpuFeatures().avx512) return xorRangeAvx512(p, bytes);
#endif
  return xorRangeScalar(p, bytes);
}

}  // namespace

uint64_t readPass(const uint8_t* data, size_t bytes, uint32_t threads) {
  if (threads <= 1) return xorRange(data, bytes);
  std::vector<uint64_t> parts(threads);
  std::vector<std::thread> workers;
  const size_t chunk = (bytes / threads + 63) / 64 * 64;
  for (uint32_t t = 0; t < threads; ++t) {
    const size_t begin = std::min(bytes, t * chunk), end = std::min(bytes, begin + chunk);
    workers.emplace_back([&, t, begin, end] { parts[t] = xorRange(data + begin, end - begin); });
  }
  uint64_t x = 0;
  for (uint32_t t = 0; t < threads; ++t) {
    workers[t].join();
    x ^= parts[t];
  }
  return x;
}

}  // namespace kvc::cpu
