// The CUDA implementation of kvc::Backend, shared by the real build (nvcc) and the emulated
// one (host compiler + cuda/emu): the same source, in namespace kvc::cuda or kvc::cuda_emu.
#pragma once
#include <memory>

#include "../compat.cuh"
#include "kvc/backend.h"

KVC_CUDA_NAMESPACE_BEGIN

// `name` is what Backend::name() reports ("cuda" or "cuda-emulated").
std::unique_ptr<Backend> makeBackend(const char* name);

KVC_CUDA_NAMESPACE_END
