// RoPE on keys stored before RoPE (cache option `rope`), fused into attention: a block's keys
// are decoded and rotated by their positions into f32 scratch rows, which the f32 dot loops
// then read; the queries were rotated once per call by the backend. Rotating each key row
// once serves all tq x GQA query vectors of the call (rotating the query per row would cost
// that many times more). Included into an ISA namespace after row_decode.inl; the math and
// the tables are those of kvc/rope.h.

#include "rope_angles.inl"

// out[r][0, D) = RoPE(position of row r) applied to key row r of a block (decoded to f32).
// Positions are the stored ones, or firstRank + r when re-indexed by rank in the stream.
// The rotation is one pass over the pairs per style, written for the compiler to vectorize
// (halves: two contiguous runs; interleaved: stride-2 pairs).
template <class S, Storage KF>
void ropeKeyBlock(const AttentionParams& p, const uint8_t* keys, uint32_t rows, const int32_t* pos, uint32_t firstRank,
                  float* out) {
  const uint32_t D = p.codec.headDim, G = p.codec.groupSize, stride = p.pool.layout.keyRowBytes;
  const RopeView& R = p.rope;
  const uint32_t dims = R.spec.dims, h = dims / 2;
  alignas(64) float cBuf[1024], sBuf[1024];
  for (uint32_t r = 0; r < rows; ++r) {
    float* __restrict x = out + static_cast<size_t>(r) * D;
    const uint8_t* row = keys + static_cast<uint64_t>(r) * stride;
    for (uint32_t e = 0; e < D; e += S::W) S::store(x + e, ChunkDecoder<S, KF>::load(row, e, D, G));
    const uint32_t position = R.spec.byRank ? firstRank + r : static_cast<uint32_t>(pos[r]);
    const float* cp;
    const float* sp;
    ropeAngles<S>(R, position, cBuf, sBuf, &cp, &sp);
    const float* __restrict c = cp;
    const float* __restrict s = sp;
    if (R.spec.style == 0) {
      for (uint32_t i = 0; i < h; ++i) {
        const float x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = x0 * c[2 * i] + x1 * s[2 * i];
        x[2 * i + 1] = x1 * c[2 * i + 1] + x0 * s[2 * i + 1];
      }
    } else {
      for (uint32_t i = 0; i < h; ++i) {
        const float x0 = x[i], x1 = x[i + h];
        x[i] = x0 * c[i] + x1 * s[i];
        x[i + h] = x1 * c[i + h] + x0 * s[i + h];
      }
    }
  }
}
