// Host RoPE rotation from the kvc/rope.h level tables, for core code that rotates rows or
// queries itself (the host low-rank attention, lowrank_host.cpp; the staging of rope caches
// for compaction, compaction/rope_stage.cpp). Host code only.
#pragma once
#include <cstdint>
#include <vector>

#include "kvc/rope.h"

namespace kvc {

// Host rotation from the level tables (the host low-rank attention and the staging of rope
// caches for compaction): cos and signed sin of `position` for channels [0, dims), the
// position's base-256 digits combined by angle addition in f32 as the CPU kernels do. c and s
// are scratch of dims floats; the results come back through cOut / sOut.
inline void ropeLevelAngles(const std::vector<float>& cosT, const std::vector<float>& sinT, uint32_t dims, uint32_t position,
                            float* c, float* s, const float** cOut, const float** sOut) {
  const float* ca = cosT.data() + static_cast<size_t>(position & (kRopeLevelSize - 1)) * dims;
  const float* sa = sinT.data() + static_cast<size_t>(position & (kRopeLevelSize - 1)) * dims;
  for (uint32_t level = 1; level < kRopeLevels; ++level) {
    const uint32_t j = (position >> (level * kRopeLevelBits)) & (kRopeLevelSize - 1);
    if (j == 0) continue;
    const size_t row = (static_cast<size_t>(level) * kRopeLevelSize + j) * dims;
    const float* cb = cosT.data() + row;
    const float* sb = sinT.data() + row;
    for (uint32_t d = 0; d < dims; ++d) {
      const float c0 = ca[d], s0 = sa[d];
      c[d] = c0 * cb[d] - s0 * sb[d];
      s[d] = s0 * cb[d] + c0 * sb[d];
    }
    ca = c, sa = s;
  }
  *cOut = ca, *sOut = sa;
}

// Rotates x[0, dims) in place by the angles of ropeLevelAngles (pairs of spec.style).
inline void ropeApply(float* x, const RopeSpec& spec, const float* c, const float* s) {
  const uint32_t half = spec.dims / 2;
  for (uint32_t j = 0; j < half; ++j) {
    const uint32_t d0 = spec.style == 0 ? 2 * j : j, d1 = spec.style == 0 ? 2 * j + 1 : j + half;
    const float x0 = x[d0], x1 = x[d1];
    x[d0] = x0 * c[d0] + x1 * s[d0];
    x[d1] = x1 * c[d1] + x0 * s[d1];
  }
}

}  // namespace kvc
