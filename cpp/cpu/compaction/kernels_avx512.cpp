// The AVX-512 (F/BW/VL/DQ) compaction kernels. Everything inside the ISA region (isa_region.h)
// is compiled for those instructions and only called after cpuid confirmed them
// (cpu_features.cpp); all includes come before the region so no shared inline code is built
// for them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../isa_region.h"
#include "../simd_scalar.h"
#include "kernels.h"

#ifdef KVC_ISA_REGIONS
#define KVC_HAVE_ISA 1
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX512)
#include "../simd_avx512.h"

namespace kvc::cpu::compaction {
namespace isa_avx512 {

#include "kernels.inl"

}  // namespace isa_avx512
}  // namespace kvc::cpu::compaction
KVC_ISA_REGION_END
#endif

namespace kvc::cpu::compaction {

const CompactionKernels* avx512CompactionKernels() {
#ifdef KVC_HAVE_ISA
  // GEMM tile: 6 rows × 4 vectors: 24 accumulators of the 32 registers, 10 loads per 24
  // multiply-adds (12 × 2 needs 14).
  static const CompactionKernels table = isa_avx512::makeCompactionTable<SimdAvx512, 6, 4>();
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace kvc::cpu::compaction
