// The precision 'fast' attention kernels with AVX-512 VNNI (vpdpbusd) and VBMI: the same
// attention loop as kernels_avx512.cpp with the integer key scorer of fast_keys.inl and the
// integer int8 value accumulation of fast_values.inl. A separate file
// and ISA region so that no VNNI instruction reaches the kernels of AVX-512 CPUs without it;
// called only after cpuid confirmed it (cpu_features.cpp).
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
#define KVC_FAST_VNNI 1
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX512_VNNI)
#include "simd_avx512.h"

namespace kvc::cpu {
namespace isa_avx512_vnni {

#include "row_decode.inl"
#include "attention_kernel.inl"
#include "kernel_instances.inl"

KernelTable makeFastTable() {
  KernelTable t;
  t.name = "avx512-vnni";
  t.width = SimdAvx512::W;
  fillFast<SimdAvx512, Storage::kInt8>(t);
  fillFast<SimdAvx512, Storage::kInt4>(t);
  return t;
}

}  // namespace isa_avx512_vnni
}  // namespace kvc::cpu
KVC_ISA_REGION_END
#endif

namespace kvc::cpu {

const KernelTable* avx512VnniFastKernels() {
#ifdef KVC_HAVE_ISA
  static const KernelTable table = isa_avx512_vnni::makeFastTable();
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace kvc::cpu
