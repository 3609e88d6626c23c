// cpuid / xgetbv probing. KVCOMPACT_SIMD=portable|avx2|novnni|avx512 caps the choice (for tests
// of the fallbacks and for benchmarks that compare them).
#include "cpu_features.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

namespace kvc::cpu {

namespace {

CpuFeatures probe() {
  CpuFeatures f;
#if defined(__x86_64__) && defined(__GNUC__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
  if (!osxsave || !avx) return f;
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  const bool ymm = (xlo & 0x6) == 0x6;
  const bool zmm = (xlo & 0xE6) == 0xE6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5), bmi2 = b & (1u << 8);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  f.avx2 = ymm && avx2 && fma && f16c && bmi2;
  f.avx512 = f.avx2 && zmm && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512vnni = f.avx512 && (c & (1u << 11)) && (c & (1u << 1));
#endif
  const char* cap = std::getenv("KVCOMPACT_SIMD");
  if (cap && std::strcmp(cap, "portable") == 0) f = CpuFeatures();
  if (cap && std::strcmp(cap, "avx2") == 0) f.avx512 = false;
  if (!f.avx512 || (cap && std::strcmp(cap, "novnni") == 0)) f.avx512vnni = false;
  return f;
}

}  // namespace

const CpuFeatures& cpuFeatures() {
  static const CpuFeatures features = probe();
  return features;
}

}  // namespace kvc::cpu
