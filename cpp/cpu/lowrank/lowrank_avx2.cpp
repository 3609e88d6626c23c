// AVX2 + FMA projection and lift of low-rank rows (project.inl); called only after cpuid
// confirmed the instructions (lowrank_kernels.cpp). Four rows x two vectors = 8 of the 16
// registers hold accumulators, leaving room for the basis vectors and broadcasts.
#include <immintrin.h>

#include <cstdint>

#include "../isa_region.h"
#include "../simd_scalar.h"
#include "kvc/rope.h"
#include "lowrank_isa.h"

#ifdef KVC_ISA_REGIONS
#define KVC_HAVE_ISA 1
KVC_ISA_REGION_BEGIN(KVC_ISA_AVX2)
#include "../simd_avx2.h"

namespace kvc::cpu {
namespace lowrank_avx2 {
#include "project.inl"
#include "../rope_angles.inl"
#include "rope_logits.inl"
}  // namespace lowrank_avx2
}  // namespace kvc::cpu
KVC_ISA_REGION_END
#endif

namespace kvc::cpu {

bool lowRankAvx2(LowRankIsa* out) {
#ifdef KVC_HAVE_ISA
  out->name = "avx2";
  out->project = &lowrank_avx2::projectImpl<SimdAvx2, 4>;
  out->lift = &lowrank_avx2::liftImpl<SimdAvx2>;
  out->ropeLogits = &lowrank_avx2::ropeLogitsImpl<SimdAvx2, 4>;
  out->rowDots = &lowrank_avx2::rowDotsImpl<SimdAvx2>;
  out->expShift = &lowrank_avx2::expShiftImpl<SimdAvx2>;
  out->weightedSum = &lowrank_avx2::weightedSumImpl<SimdAvx2>;
  return true;
#else
  (void)out;
  return false;
#endif
}

}  // namespace kvc::cpu
