// RoPE inside the attention kernel for keys stored before RoPE (cache option `rope`): the
// angle of (position, channel) from the level tables of kvc/rope.h (uploaded once per spec)
// and the channel pairing, so that the kernel can rotate each query by a row's position.
#pragma once
#include <cstdint>

#include "row_codec.cuh"
#include "kvc/rope.h"

KVC_CUDA_NAMESPACE_BEGIN

// cos and signed sin of `position` for channel d (< dims): the position's base-256 digits
// combined by angle addition, exactly as the CPU kernels do it (rope_kernel.inl).
KVC_DEVICE void ropeAngle(const float* cosT, const float* sinT, uint32_t dims, uint32_t position, uint32_t d, float& c,
                          float& s) {
  const uint32_t first = position & (kRopeLevelSize - 1);
  c = cosT[first * dims + d];
  s = sinT[first * dims + d];
  for (uint32_t level = 1; level < kRopeLevels; ++level) {
    const uint32_t j = (position >> (level * kRopeLevelBits)) & (kRopeLevelSize - 1);
    if (j == 0) continue;
    const size_t at = (static_cast<size_t>(level) * kRopeLevelSize + j) * dims + d;
    const float c1 = cosT[at], s1 = sinT[at];
    const float nc = c * c1 - s * s1;
    s = s * c1 + c * s1;
    c = nc;
  }
}

KVC_DEVICE uint32_t ropePartnerOf(uint32_t d, uint32_t dims, uint32_t style) {
  return style == 0 ? d ^ 1u : (d < dims / 2 ? d + dims / 2 : d - dims / 2);
}

KVC_CUDA_NAMESPACE_END
