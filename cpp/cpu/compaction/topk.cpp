// See topk.h.
#include "topk.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace kvc::cpu::compaction {

uint32_t selectTopK(const float* scores, uint32_t n, const uint8_t* exclude, uint32_t k, int32_t* out,
                    int32_t* scratch) {
  uint32_t eligible = 0;
  for (uint32_t i = 0; i < n; ++i)
    if (!exclude || !exclude[i]) scratch[eligible++] = static_cast<int32_t>(i);
  const uint32_t take = std::min(k, eligible);
  if (take == 0) return 0;
  // A strict total order, so the chosen set does not depend on the partition's pivots.
  auto before = [scores](int32_t a, int32_t b) {
    const float sa = scores[a], sb = scores[b];
    const bool na = std::isnan(sa), nb = std::isnan(sb);
    if (na != nb) return nb;  // the number ranks first
    if (!na && sa != sb) return sa > sb;
    return a < b;
  };
  if (take < eligible) std::nth_element(scratch, scratch + (take - 1), scratch + eligible, before);
  std::memcpy(out, scratch, take * sizeof(int32_t));
  std::sort(out, out + take);
  return take;
}

void pool1d(const float* in, uint32_t n, uint32_t kernel, PoolMode mode, float* out) {
  const uint32_t half = kernel / 2;
  if (kernel <= 1 || half == 0) {
    std::memcpy(out, in, n * sizeof(float));
    return;
  }
  if (mode == PoolMode::kAvg) {
    // Sliding sum in double so that a long row of scores does not drift.
    double sum = 0.0;
    uint32_t lo = 0, hi = 0;  // window [lo, hi)
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t wantLo = i >= half ? i - half : 0, wantHi = std::min(n, i + half + 1);
      while (hi < wantHi) sum += in[hi++];
      while (lo < wantLo) sum -= in[lo++];
      out[i] = static_cast<float>(sum / (hi - lo));
    }
    return;
  }
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t lo = i >= half ? i - half : 0, hi = std::min(n, i + half + 1);
    float m = in[lo];
    for (uint32_t j = lo + 1; j < hi; ++j) m = std::max(m, in[j]);
    out[i] = m;
  }
}

}  // namespace kvc::cpu::compaction
