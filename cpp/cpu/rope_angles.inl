// RoPE angles of one position from the level tables of kvc/rope.h, for one vector width S
// (included inside an ISA namespace by rope_kernel.inl and lowrank/rope_logits.inl).

// The cos and signed sin of `position` for channels [0, dims) (kvc/rope.h): the table rows of
// the position's base-256 digits combined by angle addition. Returns pointers to the level-0
// rows when the position is below 256; otherwise combines into c and s (vector loop, scalar tail).
template <class S>
inline void ropeAngles(const RopeView& R, uint32_t position, float* c, float* s, const float** cOut, const float** sOut) {
  const uint32_t dims = R.spec.dims;
  const uint32_t whole = dims / S::W * S::W;
  const float* ca = R.cosTable + static_cast<size_t>(position & (kRopeLevelSize - 1)) * dims;
  const float* sa = R.sinTable + static_cast<size_t>(position & (kRopeLevelSize - 1)) * dims;
  for (uint32_t level = 1; level < kRopeLevels; ++level) {
    const uint32_t j = (position >> (level * kRopeLevelBits)) & (kRopeLevelSize - 1);
    if (j == 0) continue;  // angle 0: nothing to add
    const size_t row = (static_cast<size_t>(level) * kRopeLevelSize + j) * dims;
    const float* cb = R.cosTable + row;
    const float* sb = R.sinTable + row;
    uint32_t d = 0;
    for (; d < whole; d += S::W) {
      const typename S::V c0 = S::load(ca + d), s0 = S::load(sa + d), c1 = S::load(cb + d), s1 = S::load(sb + d);
      // cos(a + b) = ca cb - sa sb (the signed sines multiply to sin a sin b); sin likewise.
      S::store(c + d, S::fma(c0, c1, S::mul(S::mul(s0, s1), S::set1(-1.0f))));
      S::store(s + d, S::fma(s0, c1, S::mul(c0, s1)));
    }
    for (; d < dims; ++d) {
      const float c0 = ca[d], s0 = sa[d];
      c[d] = c0 * cb[d] - s0 * sb[d];
      s[d] = s0 * cb[d] + c0 * sb[d];
    }
    ca = c, sa = s;
  }
  *cOut = ca, *sOut = sa;
}
