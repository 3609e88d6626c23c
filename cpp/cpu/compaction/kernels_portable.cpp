// The portable compaction kernels (any CPU): the fallback, same formulas as the vector paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../simd_scalar.h"
#include "kernels.h"

namespace kvc::cpu::compaction {
namespace isa_portable {

#include "kernels.inl"

}  // namespace isa_portable

const CompactionKernels& portableCompactionKernels() {
  // Width 1: four columns per panel and four rows per tile give the compiler independent chains.
  static const CompactionKernels table = isa_portable::makeCompactionTable<SimdScalar, 4, 4>();
  return table;
}

}  // namespace kvc::cpu::compaction
