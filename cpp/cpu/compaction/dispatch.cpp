// Picks the compaction kernel table for this CPU (cpuid, capped by KVCOMPACT_SIMD).
#include <cstring>

#include "../cpu_features.h"
#include "kernels.h"

namespace kvc::cpu::compaction {

const CompactionKernels* compactionKernelsFor(const char* isa) {
  const CpuFeatures& f = cpuFeatures();
  if (std::strcmp(isa, "portable") == 0) return &portableCompactionKernels();
  if (std::strcmp(isa, "avx2") == 0) return f.avx2 ? avx2CompactionKernels() : nullptr;
  if (std::strcmp(isa, "avx512") == 0) return f.avx512 ? avx512CompactionKernels() : nullptr;
  return nullptr;
}

const CompactionKernels& compactionKernels() {
  static const CompactionKernels* best = [] {
    if (const CompactionKernels* k = compactionKernelsFor("avx512")) return k;
    if (const CompactionKernels* k = compactionKernelsFor("avx2")) return k;
    return &portableCompactionKernels();
  }();
  return *best;
}

}  // namespace kvc::cpu::compaction
