// See read_pass.h. Eight independent accumulators keep enough loads in flight that the
// loop is bound by memory, not by the dependency chain; with AVX-512 they are 512-bit
// registers (one cache line per load), the strongest read loop this machine runs, so the
// floor the kernels are compared against is what the hardware delivers.
#include "read_pass.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "cpu_features.h"
#include "isa_region.h"
#include "pool_memory.h"

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
  for (size_t w = blocks * 8; w < words; ++w) {
    uint64_t v;
    std::memcpy(&v, p + w * 8, 8);
    x ^= v;
  }
  for (size_t i = words * 8; i < bytes; ++i) x ^= p[i];  // a partial last word, byte by byte
  return x;
}

#ifdef KVC_ISA_REGIONS
KVC_ISA_REGION_BEGIN("avx512f")
// The checksum of a vector loop: its lanes XORed together, then the tail past its last whole
// 512-byte step (the scalar loop).
uint64_t foldLanes(__m512i x, const uint8_t* tail, size_t tailBytes) {
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, x);
  uint64_t r = 0;
  for (uint64_t l : lanes) r ^= l;
  return r ^ xorRangeScalar(tail, tailBytes);
}

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
  return foldLanes(x, p + blocks * 512, bytes - blocks * 512);
}

// The same lines read one at a time into eight accumulators that live in memory: each line's
// add waits on the store of the previous add to the same accumulator, so the loop issues
// loads at a measured pace instead of in bursts. On an Intel Xeon (KVM) this reads 1 GiB at
// 19.5 GB/s where the loop above reads 16: bursts of demand misses appear to crowd out the L2
// hardware prefetcher. Data bits read as floats (any value; only the rate matters).
uint64_t pacedRangeAvx512(const uint8_t* p, size_t bytes) {
  alignas(64) float acc[8][16] = {};
  const size_t blocks = bytes / 512;
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* q = p + b * 512;
#pragma GCC unroll 1
    for (int i = 0; i < 8; ++i) {
      _mm512_store_ps(acc[i], _mm512_add_ps(_mm512_load_ps(acc[i]), _mm512_loadu_ps(reinterpret_cast<const float*>(q + 64 * i))));
      asm volatile("" ::: "memory");  // keep the accumulator in memory: the pace is the point
    }
  }
  __m512 a = _mm512_load_ps(acc[0]);
  for (int i = 1; i < 8; ++i) a = _mm512_add_ps(a, _mm512_load_ps(acc[i]));
  return foldLanes(_mm512_castps_si512(a), p + blocks * 512, bytes - blocks * 512);
}
KVC_ISA_REGION_END
#endif

uint64_t pacedRange(const uint8_t* p, size_t bytes) {
#ifdef KVC_ISA_REGIONS
  if (cpuFeatures().avx512) return pacedRangeAvx512(p, bytes);
#endif
  return xorRangeScalar(p, bytes);
}

uint64_t xorRange(const uint8_t* p, size_t bytes) {
#ifdef KVC_ISA_REGIONS
  if (cpuFeatures().avx512) return xorRangeAvx512(p, bytes);
#endif
  return xorRangeScalar(p, bytes);
}

using RangeLoop = uint64_t (*)(const uint8_t*, size_t);

uint64_t parallelPass(RangeLoop loop, const uint8_t* data, size_t bytes, uint32_t threads) {
  if (threads <= 1) return loop(data, bytes);
  std::vector<uint64_t> parts(threads);
  std::vector<std::thread> workers;
  const size_t chunk = (bytes / threads + 63) / 64 * 64;
  for (uint32_t t = 0; t < threads; ++t) {
    const size_t begin = std::min(bytes, t * chunk), end = std::min(bytes, begin + chunk);
    workers.emplace_back([&, t, begin, end] { parts[t] = loop(data + begin, end - begin); });
  }
  uint64_t x = 0;
  for (uint32_t t = 0; t < threads; ++t) {
    workers[t].join();
    x ^= parts[t];
  }
  return x;
}

// Median seconds of `runs` passes of `loop` (after one warm pass).
double medianPassSeconds(RangeLoop loop, const uint8_t* data, size_t bytes, uint32_t threads, uint32_t runs) {
  volatile uint64_t sink = parallelPass(loop, data, bytes, threads);
  std::vector<double> seconds;
  for (uint32_t r = 0; r < std::max(runs, 1u); ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink ^ parallelPass(loop, data, bytes, threads);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

}  // namespace

uint64_t readPass(const uint8_t* data, size_t bytes, uint32_t threads) {
  return parallelPass(xorRange, data, bytes, threads);
}

double readFloorBytesPerSecond(uint64_t bytes, uint32_t threads, uint32_t runs) {
  bytes = bytes / 512 * 512;
  PoolMemory memory;
  if (bytes == 0 || !memory.reserve(bytes).isOk() || !memory.commit(bytes).isOk()) return 0.0;
  uint8_t* data = memory.base();
  for (uint64_t i = 0; i < bytes; i += 4096) data[i] = static_cast<uint8_t>(i >> 12);  // fault every page in
  // The floor is the faster of the two loops (which one wins depends on the machine).
  const double burst = medianPassSeconds(xorRange, data, bytes, threads, runs);
  const double paced = medianPassSeconds(pacedRange, data, bytes, threads, runs);
  return static_cast<double>(bytes) / std::min(burst, paced);
}

}  // namespace kvc::cpu
