// AVX-512 projection and lift of low-rank rows (project.inl); called only after cpuid
// confirmed the instructions (lowrank_kernels.cpp). Eight rows x two vectors = 16 of the 32
// registers hold accumulators.
#include <immintrin.h>

#include <cstdint>

#include "../isa_region.h"
#include "../simd_scalar.h"
#include "kvc/rope.h"
#include "lowrank_isa.h"

#ifdef KVC_ISA_REGIONS
#define KVC_HAVE_ISA 1
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX512)
#include "../simd_avx512.h"

namespace kvc::cpu {
namespace lowrank_avx512 {
#include "project.inl"
#include "../rope_angles.inl"
#include "rope_logits.inl"
}  // namespace lowrank_avx512
}  // namespace kvc::cpu
KVC_ISA_REGION_END
#endif

namespace kvc::cpu {

bool lowRankAvx512(LowRankIsa* out) {
#ifdef KVC_HAVE_ISA
  out->name = "avx512";
  out->project = &lowrank_avx512::projectImpl<SimdAvx512, 8>;
  out->lift = &lowrank_avx512::liftImpl<SimdAvx512>;
  out->ropeLogits = &lowrank_avx512::ropeLogitsImpl<SimdAvx512, 8>;
  out->rowDots = &lowrank_avx512::rowDotsImpl<SimdAvx512>;
  out->expShift = &lowrank_avx512::expShiftImpl<SimdAvx512>;
  out->weightedSum = &lowrank_avx512::weightedSumImpl<SimdAvx512>;
  return true;
#else
  (void)out;
  return false;
#endif
}

}  // namespace kvc::cpu
