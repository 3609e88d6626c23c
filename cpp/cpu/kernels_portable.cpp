// The portable scalar kernels (any CPU): the fallback, and the same formulas as the vector paths.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernel_table.h"
#include "row_codec_reference.h"
#include "simd_scalar.h"

namespace kvc::cpu {
namespace isa_portable {

#include "row_decode.inl"
#include "attention_kernel.inl"
#include "kernel_instances.inl"

}  // namespace isa_portable

const KernelTable& portableKernels() {
  static const KernelTable table = isa_portable::makeTable<SimdScalar>();
  return table;
}

}  // namespace kvc::cpu
