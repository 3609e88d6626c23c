// append: converts (f16 -> f32), rotates and encodes each new row straight into its block
// slot (the fused append of ARCHITECTURE §3), with the vector Hadamard transform of the ISA
// that the kernel table was chosen for and that table's (vector) encoders. The loop lives
// here, not in the kernel table, because it needs the rotation signs and the block tables;
// each ISA's instantiation below is compiled in its own ISA region (isa_region.h), entered
// only when cpuid confirmed it (the width of the table passed in says which one). All
// includes come before the ISA regions so no shared inline code is built for those
// instructions.
#include "append_rows.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "hadamard.h"
#include "kvc/finite.h"
#include "isa_region.h"
#include "kvc/half.h"
#include "row_codec_reference.h"
#include "simd_scalar.h"

namespace kvc::cpu {
namespace append_portable {
#include "quantize_rows.inl"
#include "hadamard_simd.inl"
#include "append_kernel.inl"
}  // namespace append_portable
}  // namespace kvc::cpu

#ifdef KVC_ISA_REGIONS
#define KVC_APPEND_ISA 1
// The same instruction sets as kernels_avx2.cpp / kernels_avx512.cpp (isa_region.h), so the
// shared inline Simd traits compile to the same code in both files.
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX2)
#include "simd_avx2.h"
namespace kvc::cpu {
namespace append_avx2 {
#include "quantize_rows.inl"
#include "hadamard_simd.inl"
#include "append_kernel.inl"
}  // namespace append_avx2
}  // namespace kvc::cpu
KVC_ISA_REGION_END

KVC_ISA_REGION_BEGIN(KVC_ISA_AVX512)
#include "simd_avx512.h"
namespace kvc::cpu {
namespace append_avx512 {
#include "quantize_rows.inl"
#include "hadamard_simd.inl"
#include "append_kernel.inl"
}  // namespace append_avx512
}  // namespace kvc::cpu
KVC_ISA_REGION_END
#endif

namespace kvc::cpu {

Status appendRows(const AppendParams& p, const KernelTable& kt, std::vector<float>* scratch) {
  // One row of scratch, 64-byte aligned for the vector stores of the rotation.
  scratch->resize(static_cast<size_t>(std::max(p.codec.headDim, p.codec.valueDim)) + 16);
  const uintptr_t raw = reinterpret_cast<uintptr_t>(scratch->data());
  float* buf = reinterpret_cast<float*>((raw + 63) & ~static_cast<uintptr_t>(63));
  int64_t bad;
#ifdef KVC_APPEND_ISA
  if (kt.width == SimdAvx512::W) {
    bad = append_avx512::appendRowsIsa<SimdAvx512>(p, kt, buf);
  } else if (kt.width == SimdAvx2::W) {
    bad = append_avx2::appendRowsIsa<SimdAvx2>(p, kt, buf);
  } else {
    bad = append_portable::appendRowsIsa<SimdScalar>(p, kt, buf);
  }
#else
  bad = append_portable::appendRowsIsa<SimdScalar>(p, kt, buf);
#endif
  if (bad >= 0) return nonFiniteInput(bad, p.streamCount);
  return Status::ok();
}

}  // namespace kvc::cpu
