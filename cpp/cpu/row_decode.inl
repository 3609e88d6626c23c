// Decoding one SIMD chunk (W consecutive elements) of an encoded row into a vector, per
// storage format. Included into an ISA namespace after its Simd traits (see kernels_*.cpp);
// the layouts are those of kvc/formats.h.

// Decode prefetches run kPrefetchBlocks blocks ahead of the block being processed: a
// block is ~1 µs of work, far more than the memory latency, and the rows go to L2 (locality
// 2: prefetcht1), not L1. Requesting the next block into L1 while this one is processed put
// two blocks of keys and values (32 KiB at f16, 128 × 32 rows) into a 32 KiB L1, and the
// prefetched lines were evicted before use: cold f16 decode ran at half the read floor's
// bandwidth. From L2 the loads of the tiles hit in ~14 cycles, which the out-of-order core
// hides.
constexpr uint32_t kPrefetchBlocks = 2;

// Prefetches row r of a block ahead while row r of this block is processed: spreading the
// prefetches over the rows keeps the miss buffers from filling up at once. Callers go over
// consecutive rows from 0, so row r requests only the lines that start in its bytes: each
// line of the block once (rows of 136 or 80 bytes share lines; a prefetch per 64 bytes of
// each row issued a third more requests than lines, and the prefetches themselves took
// about 4% of int8 decode's samples).
// prefetchRows does the same for rows [r, r + n) at once: one range computation per tile of
// rows instead of one per row (the per-row bookkeeping took as many samples as the prefetches).
inline void prefetchRows(const uint8_t* ahead, uint32_t r, uint32_t n, uint32_t stride) {
  if (!ahead) return;
  const uint8_t* line = ahead + (static_cast<uint64_t>(r) * stride + 63) / 64 * 64;
  const uint8_t* end = ahead + static_cast<uint64_t>(r + n) * stride;
  for (; line < end; line += 64) __builtin_prefetch(line, 0, 2);
}

inline void prefetchRow(const uint8_t* ahead, uint32_t r, uint32_t stride) { prefetchRows(ahead, r, 1, stride); }

template <class S, Storage F>
struct ChunkDecoder;

template <class S>
struct ChunkDecoder<S, Storage::kF32> {
  static typename S::V load(const uint8_t* row, uint32_t e, uint32_t, uint32_t) {
    return S::load(reinterpret_cast<const float*>(row) + e);
  }
};

template <class S>
struct ChunkDecoder<S, Storage::kF16> {
  static typename S::V load(const uint8_t* row, uint32_t e, uint32_t, uint32_t) {
    return S::loadF16(reinterpret_cast<const uint16_t*>(row) + e);
  }
};

template <class S>
struct ChunkDecoder<S, Storage::kBF16> {
  static typename S::V load(const uint8_t* row, uint32_t e, uint32_t, uint32_t) {
    return S::loadBf16(reinterpret_cast<const uint16_t*>(row) + e);
  }
};

// int8: x = q * scale; one f16 scale per group after the D data bytes. W divides G.
template <class S>
struct ChunkDecoder<S, Storage::kInt8> {
  static typename S::V load(const uint8_t* row, uint32_t e, uint32_t D, uint32_t G) {
    const uint16_t* scales = reinterpret_cast<const uint16_t*>(row + D);
    return S::mul(S::loadI8(reinterpret_cast<const int8_t*>(row) + e), S::set1(S::halfScalar(scales[e / G])));
  }
};

// int4: x = q * scale + min; (scale, min) f16 pairs per group after the D/2 data bytes.
// Byte j of a group holds element j (low nibble) and element j + G/2 (high nibble); 2W divides G.
template <class S>
struct ChunkDecoder<S, Storage::kInt4> {
  static typename S::V load(const uint8_t* row, uint32_t e, uint32_t D, uint32_t G) {
    const uint32_t group = e / G;
    const uint32_t offset = e - group * G;
    const uint32_t half = G / 2;
    const uint16_t* params = reinterpret_cast<const uint16_t*>(row + D / 2) + 2 * group;
    const uint8_t* bytes = row + group * half;
    const typename S::V q = offset < half ? S::loadU4Lo(bytes + offset) : S::loadU4Hi(bytes + offset - half);
    return S::fma(q, S::set1(S::halfScalar(params[0])), S::set1(S::halfScalar(params[1])));
  }
};

// Whole rows decoded into f32 [n][D] (prefetching the same rows of `ahead`, a block ahead,
// when given). The generic version goes chunk by chunk; the quantized ones hoist
// each group's scale (and minimum) out of the chunk loop.
template <class S, Storage F>
struct RowDecoder {
  static void decode(const uint8_t* rows, uint32_t n, uint32_t stride, uint32_t D, uint32_t G, float* out,
                     const uint8_t* ahead) {
    for (uint32_t r = 0; r < n; ++r) {
      prefetchRow(ahead, r, stride);
      const uint8_t* row = rows + static_cast<uint64_t>(r) * stride;
      for (uint32_t e = 0; e < D; e += S::W) S::store(out + static_cast<uint64_t>(r) * D + e, ChunkDecoder<S, F>::load(row, e, D, G));
    }
  }
};

template <class S>
struct RowDecoder<S, Storage::kInt8> {
  static void decode(const uint8_t* rows, uint32_t n, uint32_t stride, uint32_t D, uint32_t G, float* out,
                     const uint8_t* ahead) {
    for (uint32_t r = 0; r < n; ++r) {
      prefetchRow(ahead, r, stride);
      const uint8_t* row = rows + static_cast<uint64_t>(r) * stride;
      const int8_t* q = reinterpret_cast<const int8_t*>(row);
      const uint16_t* scales = reinterpret_cast<const uint16_t*>(row + D);
      float* o = out + static_cast<uint64_t>(r) * D;
      for (uint32_t g0 = 0; g0 < D; g0 += G) {
        const typename S::V scale = S::set1(S::halfScalar(scales[g0 / G]));
        for (uint32_t e = g0; e < g0 + G; e += S::W) S::store(o + e, S::mul(S::loadI8(q + e), scale));
      }
    }
  }
};

template <class S>
struct RowDecoder<S, Storage::kInt4> {
  static void decode(const uint8_t* rows, uint32_t n, uint32_t stride, uint32_t D, uint32_t G, float* out,
                     const uint8_t* ahead) {
    const uint32_t half = G / 2;
    for (uint32_t r = 0; r < n; ++r) {
      prefetchRow(ahead, r, stride);
      const uint8_t* row = rows + static_cast<uint64_t>(r) * stride;
      const uint16_t* params = reinterpret_cast<const uint16_t*>(row + D / 2);
      float* o = out + static_cast<uint64_t>(r) * D;
      for (uint32_t g0 = 0; g0 < D; g0 += G) {
        const typename S::V scale = S::set1(S::halfScalar(params[2 * (g0 / G)]));
        const typename S::V mn = S::set1(S::halfScalar(params[2 * (g0 / G) + 1]));
        const uint8_t* bytes = row + g0 / 2;
        for (uint32_t j = 0; j < half; j += S::W) {
          S::store(o + g0 + j, S::fma(S::loadU4Lo(bytes + j), scale, mn));
          S::store(o + g0 + half + j, S::fma(S::loadU4Hi(bytes + j), scale, mn));
        }
      }
    }
  }
};
