// See read_pass.h. Eight independent accumulators keep enough loads in flight that the
// loop is bound by memory, not by the dependency chain.
#include "read_pass.h"

#include <cstring>
#include <thread>
#include <vector>

namespace kvc::cpu {

namespace {

uint64_t xorRange(const uint8_t* p, size_t bytes) {
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
