// Opens and closes a region of a source file whose functions are compiled for one x86-64
// instruction set (the kernels that run only after cpuid confirmed it), for GCC and clang
// alike: GCC takes `#pragma GCC target`, which clang ignores; clang takes `#pragma clang
// attribute` (the target attribute on every function declared in the region). The rest of
// the file, and every header included before the region, stays baseline x86-64, so no
// shared inline function is ever emitted with instructions a caller's CPU may lack (which
// per-file -mavx2 flags would risk). Include this header, then the other headers, then
// open the region.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KVC_ISA_REGIONS 1

// The instruction sets of the kernel tables, named once for every file that compiles them.
#define KVC_ISA_AVX2 "avx2,fma,f16c,bmi2"
#define KVC_ISA_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2"
#define KVC_ISA_AVX512_VNNI "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c,bmi2"

#define KVC_PRAGMA(...) _Pragma(#__VA_ARGS__)

#if defined(__clang__)
#define KVC_ISA_REGION_BEGIN(isa) \
  KVC_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define KVC_ISA_REGION_END KVC_PRAGMA(clang attribute pop)
#else
// GCC 12 reports the intentionally undefined lanes of some intrinsics as uninitialized.
#define KVC_ISA_REGION_BEGIN(isa)                          \
  KVC_PRAGMA(GCC push_options)                             \
  KVC_PRAGMA(GCC diagnostic push)                          \
  KVC_PRAGMA(GCC diagnostic ignored "-Wuninitialized")     \
  KVC_PRAGMA(GCC diagnostic ignored "-Wmaybe-uninitialized") \
  KVC_PRAGMA(GCC target(isa))
#define KVC_ISA_REGION_END KVC_PRAGMA(GCC diagnostic pop) KVC_PRAGMA(GCC pop_options)
#endif

#endif
