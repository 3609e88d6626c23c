// The SIMD logit-bound kernel, instantiated per instruction set by block_bounds_<isa>.cpp
// inside its ISA region (needs a Simd type S with W, V, zero, load, loadBf16, mul, max, add,
// reduce). Per block: four queries at a time share each load of lo / hi.
//
// The summaries sit in the pool's side array (kvc/key_summary.h), one entry per block id, so a
// stream's entries are a few hundred bytes to a few KB apart instead of a whole block: the next
// kPrefetchAhead entries of the block table are prefetched by hand (the table is in block-id
// order only roughly, which the hardware prefetcher cannot follow).
constexpr uint32_t kPrefetchAhead = 8;

inline void prefetchEntry(const uint8_t* entry, uint32_t bytes) {
  for (uint32_t o = 0; o < bytes; o += 64) __builtin_prefetch(entry + o);
}

template <class S>
void boundsRange(const PoolView& pool, const StreamView& s, uint32_t b0, uint32_t b1, const float* q, uint32_t M,
                 uint32_t D, float scale, float* bounds) {
  using V = typename S::V;
  const uint32_t entryBytes = pool.layout.summaryBytes;
  for (uint32_t b = b0; b < std::min(b1, b0 + kPrefetchAhead); ++b) prefetchEntry(summaryEntry(pool, s.blockTable[b]), entryBytes);
  for (uint32_t b = b0; b < b1; ++b) {
    if (b + kPrefetchAhead < b1) prefetchEntry(summaryEntry(pool, s.blockTable[b + kPrefetchAhead]), entryBytes);
    const uint8_t* entry = summaryEntry(pool, s.blockTable[b]);
    const uint16_t* lo = summaryBounds(entry);
    const uint16_t* hi = lo + D;
    float best = -INFINITY;
    uint32_t m = 0;
    for (; m + 4 <= M; m += 4) {
      V acc[4] = {S::zero(), S::zero(), S::zero(), S::zero()};
      for (uint32_t d = 0; d < D; d += S::W) {
        const V vl = S::loadBf16(lo + d), vh = S::loadBf16(hi + d);
        for (int j = 0; j < 4; ++j) {
          const V x = S::load(q + static_cast<size_t>(m + j) * D + d);
          acc[j] = S::add(acc[j], S::max(S::mul(x, vl), S::mul(x, vh)));
        }
      }
      for (int j = 0; j < 4; ++j) best = std::max(best, S::reduce(acc[j]));
    }
    for (; m < M; ++m) {
      V acc = S::zero();
      for (uint32_t d = 0; d < D; d += S::W) {
        const V x = S::load(q + static_cast<size_t>(m) * D + d);
        acc = S::add(acc, S::max(S::mul(x, S::loadBf16(lo + d)), S::mul(x, S::loadBf16(hi + d))));
      }
      best = std::max(best, S::reduce(acc));
    }
    bounds[b] = finishBound(entry, best, scale);
  }
}
