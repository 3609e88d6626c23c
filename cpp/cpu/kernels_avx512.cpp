// The AVX-512 (F/BW/VL/DQ) kernels. Everything between the target pragmas is compiled for
// those instructions and only ever called after cpuid confirmed them (cpu_features.cpp);
// all includes come before the pragma so no shared inline code is built for them.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernel_table.h"
#include "row_codec_reference.h"
#include "simd_scalar.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define KVC_HAVE_ISA 1
#pragma GCC push_options
// GCC 12 reports the intentionally undefined lanes of some intrinsics as uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2")
#include "simd_avx512.h"

namespace kvc::cpu {
namespace isa_avx512 {

#include "row_decode.inl"
#include "attention_kernel.inl"
#include "kernel_instances.inl"

}  // namespace isa_avx512
}  // namespace kvc::cpu
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

namespace kvc::cpu {

const KernelTable* avx512Kernels() {
#ifdef KVC_HAVE_ISA
  static const KernelTable table = isa_avx512::makeTable<SimdAvx512>();
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace kvc::cpu
