// See fma_probe.h. Twelve independent accumulators cover the FMA latency (4 cycles) on two
// FMA pipes; the empty asm keeps each accumulator in a register and the chain unbroken.
#include "fma_probe.h"

#include <immintrin.h>

#include "cpu_features.h"
#include "isa_region.h"

namespace kvc::cpu {

namespace {

#define KVC_FMA_CHAINS(V, FMA, SET1, STORE, LANES)                                         \
  V a0 = SET1(1.0f), a1 = SET1(1.1f), a2 = SET1(1.2f), a3 = SET1(1.3f), a4 = SET1(1.4f);   \
  V a5 = SET1(1.5f), a6 = SET1(1.6f), a7 = SET1(1.7f), a8 = SET1(1.8f), a9 = SET1(1.9f);   \
  V a10 = SET1(2.0f), a11 = SET1(2.1f);                                                    \
  const V b = SET1(0.9999999f), c = SET1(1e-7f);                                           \
  for (uint64_t i = 0; i < iterations; ++i) {                                              \
    a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);        \
    a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);        \
    a8 = FMA(a8, b, c); a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);    \
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));     \
    __asm__ volatile("" : "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));   \
  }                                                                                        \
  alignas(64) float out[LANES];                                                            \
  STORE(out, a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);                 \
  return FmaProbe{iterations * 12 * (LANES), (LANES), out[0]};

KVC_ISA_REGION_BEGIN("avx512f")
FmaProbe probeAvx512(uint64_t iterations) {
  KVC_FMA_CHAINS(__m512, _mm512_fmadd_ps, _mm512_set1_ps, _mm512_store_ps, 16)
}
KVC_ISA_REGION_END

KVC_ISA_REGION_BEGIN("avx2,fma")
FmaProbe probeAvx2(uint64_t iterations) {
  KVC_FMA_CHAINS(__m256, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_store_ps, 8)
}
KVC_ISA_REGION_END

FmaProbe probeScalar(uint64_t iterations) {
  float a[12];
  for (int j = 0; j < 12; ++j) a[j] = 1.0f + 0.1f * static_cast<float>(j);
  for (uint64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 12; ++j) a[j] = a[j] * 0.9999999f + 1e-7f;
    __asm__ volatile("" : : "r"(a) : "memory");
  }
  float sum = 0.0f;
  for (float x : a) sum += x;
  return FmaProbe{iterations * 12, 1, sum};
}

#undef KVC_FMA_CHAINS

}  // namespace

FmaProbe fmaProbe(uint64_t iterations) {
  const CpuFeatures& f = cpuFeatures();
  if (f.avx512) return probeAvx512(iterations);
  if (f.avx2) return probeAvx2(iterations);
  return probeScalar(iterations);
}

}  // namespace kvc::cpu
