// Picks the widest projection / lift this CPU runs (cpuid, as the row kernels do) and
// fills the backend's LowRankKernels table (KVCOMPACT_SIMD caps the choice, cpu_features.cpp).

#include "../cpu_features.h"
#include "../simd_scalar.h"
#include "lowrank_cpu.h"
#include "lowrank_isa.h"
#include "kvc/rope.h"

namespace kvc::cpu {

namespace lowrank_portable {
#include "project.inl"
#include "../rope_angles.inl"
#include "rope_logits.inl"
}  // namespace lowrank_portable

void projectScalar(const float* in, uint64_t inStride, uint32_t n, uint32_t D, const float* basis, uint32_t r, float scale,
                   float* out, uint64_t outStride) {
  lowrank_portable::projectImpl<SimdScalar, 1>(in, inStride, n, D, basis, r, scale, out, outStride);
}

namespace {

LowRankKernels build() {
  LowRankKernels k;
  k.name = "portable";
  k.project = &projectScalar;
  k.lift = &lowrank_portable::liftImpl<SimdScalar>;
  k.fitBasis = &fitBasisSymmetric;
  k.denseAttention = &denseAttention;
  k.ropeLogits = &lowrank_portable::ropeLogitsImpl<SimdScalar, 1>;
  k.rowDots = &lowrank_portable::rowDotsImpl<SimdScalar>;
  k.expShift = &lowrank_portable::expShiftImpl<SimdScalar>;
  k.weightedSum = &lowrank_portable::weightedSumImpl<SimdScalar>;
  LowRankIsa isa;
  const CpuFeatures& f = cpuFeatures();
  if ((f.avx512 && lowRankAvx512(&isa)) || (f.avx2 && lowRankAvx2(&isa))) {
    k.name = isa.name;
    k.project = isa.project;
    k.lift = isa.lift;
    k.ropeLogits = isa.ropeLogits;
    k.rowDots = isa.rowDots;
    k.expShift = isa.expShift;
    k.weightedSum = isa.weightedSum;
  }
  return k;
}

}  // namespace

const LowRankKernels& lowRankKernels() {
  static const LowRankKernels table = build();
  return table;
}

}  // namespace kvc::cpu

namespace kvc {
const LowRankKernels& hostLowRankKernels() { return cpu::lowRankKernels(); }
}  // namespace kvc
