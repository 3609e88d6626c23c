// The SIMT emulator as kernel sources see it: include this instead of cuda_runtime.h when
// compiling .cu files with a host compiler (cuda/compat.cuh does so). It keeps the CUDA
// toolkit's fp16/bf16 types and host declarations and replaces everything device-side.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "intrinsics.h"
#include "launch.h"
#include "runtime.h"
#include "simt.h"

// Blocks run one at a time, so a function-local static is private to the running block.
#undef __shared__
#define __shared__ static
