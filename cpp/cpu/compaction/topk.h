// Top-k selection and 1-D pooling of per-row scores (portable; linear time on average).
#pragma once
#include <cstdint>

namespace kvc::cpu::compaction {

// Writes to out the indices of the k highest scores among the n rows whose exclude flag is 0
// (exclude [n] or nullptr), in ascending index order, and returns how many it wrote
// (min(k, eligible rows)). Order: higher score first; equal scores -> lower index first;
// NaN ranks below every number. scratch [n] int32. nth_element, so O(n) on average.
uint32_t selectTopK(const float* scores, uint32_t n, const uint8_t* exclude, uint32_t k, int32_t* out,
                    int32_t* scratch);

enum class PoolMode { kMax, kAvg };
// out[i] = max or mean of in[j] over the window |j − i| ≤ kernel / 2 clipped to [0, n)
// (SnapKV-style smoothing so that neighbours of a strong row are kept with it). kernel <= 1
// copies. in and out must not overlap.
void pool1d(const float* in, uint32_t n, uint32_t kernel, PoolMode mode, float* out);

}  // namespace kvc::cpu::compaction
