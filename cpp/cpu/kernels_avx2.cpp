// The AVX2 + FMA + F16C kernels. Everything inside the ISA region (isa_region.h) is compiled
// for those instructions and only ever called after cpuid confirmed them (cpu_features.cpp);
// all includes come before the region so no shared inline code is built for them.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "isa_region.h"
#include "kernel_table.h"
#include "row_codec_reference.h"
#include "simd_scalar.h"

#ifdef KVC_ISA_REGIONS
#define KVC_HAVE_ISA 1
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX2)
#include "simd_avx2.h"

namespace kvc::cpu {
namespace isa_avx2 {

#include "row_decode.inl"
#include "attention_kernel.inl"
#include "kernel_instances.inl"

}  // namespace isa_avx2
}  // namespace kvc::cpu
KVC_ISA_REGION_END
#endif

namespace kvc::cpu {

const KernelTable* avx2Kernels() {
#ifdef KVC_HAVE_ISA
  static const KernelTable table = isa_avx2::makeTable<SimdAvx2>();
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace kvc::cpu
