// The AVX2 + FMA compaction kernels. Everything inside the ISA region (isa_region.h) is
// compiled for those instructions and only called after cpuid confirmed them
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
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX2)
#include "../simd_avx2.h"

namespace kvc::cpu::compaction {
namespace isa_avx2 {

#include "kernels.inl"

}  // namespace isa_avx2
}  // namespace kvc::cpu::compaction
KVC_ISA_REGION_END
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
