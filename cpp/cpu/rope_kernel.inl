// RoPE on keys stored before RoPE (cache option `rope`), fused into attention: a block's keys
// are decoded and rotated by their positions into f32 scratch rows, which the f32 dot loops
// then read; the queries were rotated once per call by the backend. Rotating each key row
// once serves all tq x GQA query vectors of the call (rotating the query per row would cost
// that many times more). Included into an ISA namespace after row_decode.inl; the math and
// the tables are those of kvc/rope.h.

// c[d], s[d] for d < dims: cos and signed sin of `position`, by angle addition of the
// position's base-256 digits (kvc/rope.h). Vector loop over whole vectors, scalar tail.
template <class S>
inline void ropeAngles(const RopeView& R, uint32_t position, float* c, float* s) {
  const uint32_t dims = R.spec.dims;
  const uint32_t whole = dims / S::W * S::W;
  const uint32_t first = position & (kRopeLevelSize - 1);
  const float* c0 = R.cosTable + static_cast<size_t>(first) * dims;
  const float* s0 = R.sinTable + static_cast<size_t>(first) * dims;
  for (uint32_t d = 0; d < dims; ++d) c[d] = c0[d], s[d] = s0[d];
  for (uint32_t level = 1; level < kRopeLevels; ++level) {
    const uint32_t j = (position >> (level * kRopeLevelBits)) & (kRopeLevelSize - 1);
    if (j == 0) continue;  // angle 0: nothing to add (the usual case for short contexts)
    const size_t row = (static_cast<size_t>(level) * kRopeLevelSize + j) * dims;
    const float* c1 = R.cosTable + row;
    const float* s1 = R.sinTable + row;
    uint32_t d = 0;
    for (; d < whole; d += S::W) {
      const typename S::V ca = S::load(c + d), sa = S::load(s + d), cb = S::load(c1 + d), sb = S::load(s1 + d);
      // cos(a + b) = ca cb - sa sb; the signed sines multiply to sin a sin b.
      S::store(c + d, S::fma(ca, cb, S::mul(S::mul(sa, sb), S::set1(-1.0f))));
      S::store(s + d, S::fma(sa, cb, S::mul(ca, sb)));
    }
    for (; d < dims; ++d) {
      const float ca = c[d], sa = s[d];
      c[d] = ca * c1[d] - sa * s1[d];
      s[d] = sa * c1[d] + ca * s1[d];
    }
  }
}

// out[r][0, D) = RoPE(position of row r) applied to key row r of a block (decoded to f32).
// Positions are the stored ones, or firstRank + r when re-indexed by rank in the stream.
template <class S, Storage KF>
void ropeKeyBlock(const AttentionParams& p, const uint8_t* keys, uint32_t rows, const int32_t* pos, uint32_t firstRank,
                  float* out) {
  const uint32_t D = p.codec.headDim, G = p.codec.groupSize, stride = p.pool.layout.keyRowBytes;
  const RopeView& R = p.rope;
  const uint32_t dims = R.spec.dims, style = R.spec.style;
  const uint32_t whole = dims / S::W * S::W;
  alignas(64) float c[1024], s[1024], partner[1024];
  for (uint32_t r = 0; r < rows; ++r) {
    float* x = out + static_cast<size_t>(r) * D;
    const uint8_t* row = keys + static_cast<uint64_t>(r) * stride;
    for (uint32_t e = 0; e < D; e += S::W) S::store(x + e, ChunkDecoder<S, KF>::load(row, e, D, G));
    const uint32_t position = R.spec.byRank ? firstRank + r : static_cast<uint32_t>(pos[r]);
    ropeAngles<S>(R, position, c, s);
    if (style == 0) {
      for (uint32_t d = 0; d < dims; d += 2) partner[d] = x[d + 1], partner[d + 1] = x[d];
    } else {
      const uint32_t h = dims / 2;
      for (uint32_t d = 0; d < h; ++d) partner[d] = x[d + h], partner[d + h] = x[d];
    }
    uint32_t d = 0;
    for (; d < whole; d += S::W) {
      S::store(x + d, S::fma(S::load(x + d), S::load(c + d), S::mul(S::load(partner + d), S::load(s + d))));
    }
    for (; d < dims; ++d) x[d] = x[d] * c[d] + partner[d] * s[d];
  }
}
