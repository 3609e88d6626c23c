// The one header through which kernel sources reach CUDA: under nvcc it is the real
// runtime; under a host compiler it is the SIMT emulator (cuda/emu). Kernels use only the
// macros below for the few constructs the two builds spell differently.
#pragma once

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// Launch with KVC_LAUNCH(kernel, grid, block, sharedBytes, stream)(args...). `kernel` must be
// one token: bind a template instance to a variable first (auto k = f<T, D>;).
#define KVC_LAUNCH(kernel, grid, block, sharedBytes, stream) kernel<<<(grid), (block), (sharedBytes), (stream)>>>
// Dynamic shared memory as a typed pointer. One byte array shared by all kernels of a
// translation unit avoids nvcc's "incompatible extern __shared__ redeclaration" error.
#define KVC_DYNAMIC_SHARED(type, name)                       \
  extern __shared__ __align__(16) unsigned char kvc_dynamic_shared_[]; \
  type* name = reinterpret_cast<type*>(kvc_dynamic_shared_)
// (threads, minBlocksPerSM): with the thread count alone, nvcc 13 caps sm_90 kernels at 32-40
// registers and spills; a minimum of 4 blocks per SM leaves room (see PERFORMANCE.md).
#define KVC_LAUNCH_BOUNDS(...) __launch_bounds__(__VA_ARGS__)
#define KVC_UNROLL _Pragma("unroll")
#define KVC_CUDA_NAMESPACE_BEGIN namespace kvc { namespace cuda {
#define KVC_CUDA_NAMESPACE_END } }

#else  // host compiler: emulate

#include "emu/cuda_emu.h"

#define KVC_LAUNCH(kernel, grid, block, sharedBytes, stream) \
  ::kvc_emu::makeLaunch(kernel, (grid), (block), (sharedBytes), (stream), #kernel)
#define KVC_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::kvc_emu::dynamicShared())
#define KVC_LAUNCH_BOUNDS(...)
#define KVC_UNROLL
// The emulated kernels get their own namespace so that they can be linked into the same
// binary as the nvcc-compiled ones.
#define KVC_CUDA_NAMESPACE_BEGIN namespace kvc { namespace cuda_emu {
#define KVC_CUDA_NAMESPACE_END } }

#endif
