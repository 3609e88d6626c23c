// The AVX2 + FMA compaction kernels. Everything between the target pragmas is compiled for
// those instructions and only called after cpuid confirmed them (cpu_features.cpp); all
// includes come before the pragma so no shared inline code is built for them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../simd_scalar.h"
#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define KVC_HAVE_ISA 1
#pragma GCC push_options
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx2,fma,f16c,bmi2")
#include "../simd_avx2.h"

namespace kvc::cpu::compaction {
namespace isa_avx2 {

#include "kernels.inl"

}  // namespace isa_avx2
}  // namespace kvc::cpu::compaction
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

namespace kvc::cpu::compaction {

const CompactionKernels* avx2CompactionKernels() {
#ifdef KVC_HAVE_ISA
  // GEMM tile: 6 rows × 2 vectors: 12 accumulators of the 16 registers.
  static const CompactionKernels table = isa_avx2::makeCompactionTable<SimdAvx2, 6, 2>();
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace kvc::cpu::compaction
