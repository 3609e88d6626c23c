// The logit-bound kernel of sparse decode for AVX2 (bounds_kernel.inl), compiled inside an
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
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX2)
#include "../simd_avx2.h"

namespace kvc::cpu {
namespace isa_avx2 {
#include "bounds_kernel.inl"
}  // namespace isa_avx2
}  // namespace kvc::cpu
KVC_ISA_REGION_END
#endif

namespace kvc::cpu {

BoundsRangeFn avx2BoundsKernel() {
#ifdef KVC_HAVE_ISA
  return &isa_avx2::boundsRange<SimdAvx2>;
#else
  return nullptr;
#endif
}

}  // namespace kvc::cpu
