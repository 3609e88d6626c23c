// The logit-bound kernel of sparse decode for AVX512 (bounds_kernel.inl), compiled inside an
// ISA region (isa_region.h) and called only after cpuid confirmed the instructions.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../isa_region.h"
#include "bounds_common.h"
#include "key_summaries.h"

#ifdef KVC_ISA_REGIONS
#define KVC_HAVE_ISA 1
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX512)
#include "../simd_avx512.h"

namespace kvc::cpu {
namespace isa_avx512 {
#include "bounds_kernel.inl"
}  // namespace isa_avx512
}  // namespace kvc::cpu
KVC_ISA_REGION_END
#endif

namespace kvc::cpu {

BoundsRangeFn avx512BoundsKernel() {
#ifdef KVC_HAVE_ISA
  return &isa_avx512::boundsRange<SimdAvx512>;
#else
  return nullptr;
#endif
}

}  // namespace kvc::cpu
