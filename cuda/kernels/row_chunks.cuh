// Compile-time-format decoding of a run of N consecutive elements of a stored row (the
// attention kernels' inner loop): one vector load of the run from shared memory, then the
// formulas of kvc/formats.h exactly as decodeElement (row_codec.cuh) spells them, so both
// round identically. ChunkCodec<S> has no primary definition: a format without one fails
// to compile wherever the dispatch table instantiates it.
#pragma once
#include <cstdint>

#include "row_codec.cuh"

KVC_CUDA_NAMESPACE_BEGIN

// kWords 32-bit words from p (aligned to 4 * kWords bytes when kWords is 2 or 4).
template <int kWords>
KVC_DEVICE void loadWords(const uint8_t* p, uint32_t (&w)[kWords]) {
  if constexpr (kWords == 4) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else if constexpr (kWords == 2) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    w[0] = v.x, w[1] = v.y;
  } else {
    KVC_UNROLL
    for (int i = 0; i < kWords; ++i) w[i] = reinterpret_cast<const uint32_t*>(p)[i];
  }
}

template <Storage S>
struct ChunkCodec;

// kChunk: the widest run one load decodes (16 bytes for the plain formats; 4 bytes of codes
// for int8, 8 for int4, whose rows are only 4-byte aligned). decode<N> requires N to divide
// kChunk and d0 % N == 0; with N == 1 it decodes any element (the generic head_dim path).

template <>
struct ChunkCodec<Storage::kF32> {
  static constexpr int kChunk = 4;
  template <int N>
  KVC_DEVICE static void decode(const uint8_t* row, uint32_t, uint32_t, uint32_t d0, float (&x)[N]) {
    uint32_t w[N];
    loadWords<N>(row + 4 * d0, w);
    KVC_UNROLL
    for (int i = 0; i < N; ++i) x[i] = __uint_as_float(w[i]);
  }
};

template <bool kBf16>
struct HalfChunkCodec {
  static constexpr int kChunk = 8;
  KVC_DEVICE static float one(uint32_t bits) { return kBf16 ? bf16ToFloat(static_cast<uint16_t>(bits)) : loadHalf(static_cast<uint16_t>(bits)); }
  template <int N>
  KVC_DEVICE static void decode(const uint8_t* row, uint32_t, uint32_t, uint32_t d0, float (&x)[N]) {
    if constexpr (N == 1) {
      x[0] = one(loadU16(row + 2 * d0));
    } else {
      uint32_t w[N / 2];
      loadWords<N / 2>(row + 2 * d0, w);
      KVC_UNROLL
      for (int i = 0; i < N / 2; ++i) {
        x[2 * i] = one(w[i] & 0xFFFFu);
        x[2 * i + 1] = one(w[i] >> 16);
      }
    }
  }
};
template <>
struct ChunkCodec<Storage::kF16> : HalfChunkCodec<false> {};
template <>
struct ChunkCodec<Storage::kBF16> : HalfChunkCodec<true> {};

template <>
struct ChunkCodec<Storage::kInt8> {
  static constexpr int kChunk = 4;
  template <int N>
  KVC_DEVICE static void decode(const uint8_t* row, uint32_t D, uint32_t G, uint32_t d0, float (&x)[N]) {
    if (N == 1 || G % N != 0) {  // the run crosses groups (groupSize 2): element by element
      KVC_UNROLL
      for (int i = 0; i < N; ++i) x[i] = decodeElement(row, Storage::kInt8, D, G, d0 + i);
      return;
    }
    const float scale = loadHalf(loadU16(row + D + 2 * (d0 / G)));
    uint32_t bytes;
    if constexpr (N == 4) {
      bytes = *reinterpret_cast<const uint32_t*>(row + d0);
    } else {
      bytes = loadU16(row + d0);
    }
    KVC_UNROLL
    for (int i = 0; i < N; ++i) x[i] = static_cast<float>(static_cast<int8_t>((bytes >> (8 * i)) & 0xFFu)) * scale;
  }
};

template <>
struct ChunkCodec<Storage::kInt4> {
  static constexpr int kChunk = 8;
  // Elements j < G/2 of a group are the low nibbles of bytes j, elements j >= G/2 the high
  // nibbles of bytes j - G/2: a run inside one half-group is one nibble of N consecutive bytes.
  template <int N>
  KVC_DEVICE static void decode(const uint8_t* row, uint32_t D, uint32_t G, uint32_t d0, float (&x)[N]) {
    if (N == 1 || G % (2 * N) != 0) {
      KVC_UNROLL
      for (int i = 0; i < N; ++i) x[i] = decodeElement(row, Storage::kInt4, D, G, d0 + i);
      return;
    }
    const uint32_t g = d0 / G, j = d0 % G, half = G / 2;
    const uint32_t shift = j < half ? 0 : 4;
    const uint8_t* sm = row + D / 2 + 4 * g;
    const float scale = loadHalf(loadU16(sm)), mn = loadHalf(loadU16(sm + 2));
    // int4 rows are only 4-byte aligned: word loads (a half word for a run of 2).
    const uint8_t* codes = row + g * half + (j < half ? j : j - half);
    constexpr int kWords = N >= 4 ? N / 4 : 1;
    uint32_t w[kWords];
    if constexpr (N >= 4) {
      KVC_UNROLL
      for (int i = 0; i < kWords; ++i) w[i] = reinterpret_cast<const uint32_t*>(codes)[i];
    } else {
      w[0] = loadU16(codes);
    }
    KVC_UNROLL
    for (int i = 0; i < N; ++i) {
      const uint32_t q = (w[i / 4] >> (8 * (i % 4) + shift)) & 0xFu;
      x[i] = fmaf(static_cast<float>(q), scale, mn);
    }
  }
};

KVC_CUDA_NAMESPACE_END
