// Decoding one SIMD chunk (W consecutive elements) of an encoded row into a vector, per
// storage format. Included into an ISA namespace after its Simd traits (see kernels_*.cpp);
// the layouts are those of kvc/formats.h.

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
