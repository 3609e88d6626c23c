// The SIMD logit-bound kernel, instantiated per instruction set by block_bounds_<isa>.cpp
// inside its ISA region (needs a Simd type S with W, V, zero, load, loadBf16, mul, max, add,
// reduce). Per block: four queries at a time share each load of lo / hi.
//
// The summaries sit at the end of blocks a whole block apart (16.6 KB for f16 at head_dim 128),
// one page each, so the hardware prefetcher never runs ahead: the tail of the block
// kPrefetchAhead blocks on (beta, positions, summary) is prefetched by hand, which turns a
// chain of memory latencies into a stream.
constexpr uint32_t kPrefetchAhead = 8;

inline void prefetchTail(const uint8_t* block, const BlockLayout& L, uint32_t D) {
  const uint32_t end = L.summaryOffset + 4 * D;
  for (uint32_t o = L.betaOffset; o < end; o += 64) __builtin_prefetch(block + o);
}

template <class S>
void boundsRange(const PoolView& pool, const StreamView& s, uint32_t b0, uint32_t b1, const float* q, uint32_t M,
                 uint32_t D, float scale, float* bounds) {
  using V = typename S::V;
  const BlockLayout& L = pool.layout;
  for (uint32_t b = b0; b < std::min(b1, b0 + kPrefetchAhead); ++b) {
    prefetchTail(pool.base + static_cast<uint64_t>(s.blockTable[b]) * L.blockBytes, L, D);
  }
  for (uint32_t b = b0; b < b1; ++b) {
    if (b + kPrefetchAhead < b1) {
      prefetchTail(pool.base + static_cast<uint64_t>(s.blockTable[b + kPrefetchAhead]) * L.blockBytes, L, D);
    }
    const uint8_t* block = pool.base + static_cast<uint64_t>(s.blockTable[b]) * L.blockBytes;
    const uint16_t* lo = blockSummary(block, L);
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
    bounds[b] = finishBound(block, L, s.length, b, best, scale);
  }
}
