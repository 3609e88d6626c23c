// Warp-level f16 tensor-core tile product and the conversions that feed it exact operands.
//
// mmaF16: C[16×8] += A[16×16] · B[16×8] (f16 inputs, f32 accumulation), with the register
// layout of PTX mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32. With g = lane / 4 and
// t = lane % 4, a lane holds
//   a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
//   c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
// (each a/b register a half2, the lower k in the low half). On sm_80+ it is one mma.sync; elsewhere
// (the emulator, nvcc's host pass) the lanes gather the fragments with shuffles and sum the 16
// products of each entry in k order in f32. A product of two f16 is exact in f32, so the two
// differ only in how the f32 sums round.
//
// Exact operands: stored int8 and int4 codes and f16 values are exact in f16; the conversions
// below build f16 pairs from packed codes with integer ops only (the magic-number trick: the
// bits 0x6400 | x are the f16 1024 + x for x < 1024, so one AND/OR makes a pair of codes into
// 1024 + code, and one packed subtract removes the 1024). f32 operands (queries, softmax
// weights) are split into hi + lo f16 parts (f16(x) and f16(x − f16(x))), which together
// keep 22 bits of x; a tile product then carries hi and lo in separate columns of B.
#pragma once
#include <cstdint>

#include "row_codec.cuh"

KVC_CUDA_NAMESPACE_BEGIN

// f32 -> f16 bits, round to nearest even (overflow to inf, as cvt.rn does).
KVC_DEVICE uint16_t f16Bits(float x) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(x));
#else
  return floatToHalf(x);
#endif
}

KVC_DEVICE uint32_t packHalves(uint16_t lo, uint16_t hi) { return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16); }

// The two halves of a pair as floats.
KVC_DEVICE float pairLo(uint32_t h2) { return loadHalf(static_cast<uint16_t>(h2 & 0xFFFFu)); }
KVC_DEVICE float pairHi(uint32_t h2) { return loadHalf(static_cast<uint16_t>(h2 >> 16)); }

// Packed f16 a·m + c for pairs whose results are exact in f16 (small integers here), so any
// rounding mode gives the same bits.
KVC_DEVICE uint32_t pairFma(uint32_t a, uint32_t m, uint32_t c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 530
  uint32_t d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(m), "r"(c));
  return d;
#else
  return packHalves(f16Bits(pairLo(a) * pairLo(m) + pairLo(c)), f16Bits(pairHi(a) * pairHi(m) + pairHi(c)));
#endif
}

// Byte permute (PRMT): result byte i = byte sel_i of the 8 bytes {b (0..3), a... } as the
// hardware numbers them: selector nibble i picks byte n of (y << 32 | x).
KVC_DEVICE uint32_t bytePerm(uint32_t x, uint32_t y, uint32_t sel) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, sel);
#else
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((v >> (8 * ((sel >> (4 * i)) & 7u))) & 0xFFu) << (8 * i);
  return r;
#endif
}

constexpr uint32_t kPair1024 = 0x64006400u;            // (1024, 1024)
constexpr uint32_t kPairMinus1024 = 0xE400E400u;       // (−1024, −1024)
constexpr uint32_t kPairMinus1152 = 0xE480E480u;       // (−1152, −1152): int8 codes biased by +128
constexpr uint32_t kPairOne = 0x3C003C00u;             // (1, 1)
constexpr uint32_t kPairSixteenth = 0x2C002C00u;       // (1/16, 1/16)
constexpr uint32_t kPairMinus64 = 0xD400D400u;         // (−64, −64)

// int4: the low nibbles of bytes 0 and 2 of w as the pair (code0, code2).
KVC_DEVICE uint32_t int4LowPair(uint32_t w) { return pairFma((w & 0x000F000Fu) | kPair1024, kPairOne, kPairMinus1024); }
// int4: the high nibbles of bytes 0 and 2 (bits 4..7 land as 16·code: (1024 + 16c)/16 − 64 = c).
KVC_DEVICE uint32_t int4HighPair(uint32_t w) { return pairFma((w & 0x00F000F0u) | kPair1024, kPairSixteenth, kPairMinus64); }
// int8 (two's complement): bytes 0 and 2 of w as the pair (code0, code2); xor 0x80 biases a
// code by +128 into 0..255.
KVC_DEVICE uint32_t int8Pair(uint32_t w) { return pairFma((w & 0x00FF00FFu) ^ 0x64806480u, kPairOne, kPairMinus1152); }

// x = hi + lo with both f16 (x finite and |x| < 65504).
KVC_DEVICE void splitHalf(float x, uint16_t* hi, uint16_t* lo) {
  *hi = f16Bits(x);
  *lo = f16Bits(x - loadHalf(*hi));
}

KVC_DEVICE void mmaF16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  const unsigned lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // Entry (row, col) = Σ_k A[row][k] B[k][col]: rows g, g + 8 and columns 2t, 2t + 1.
  float sum[4] = {c[0], c[1], c[2], c[3]};
  for (unsigned half = 0; half < 2; ++half) {      // k < 8, then k >= 8
    for (unsigned s = 0; s < 4; ++s) {             // the pair k = 8·half + 2s, +1 from lane 4·row + s
      const uint32_t aRow0 = __shfl_sync(0xFFFFFFFFu, a[2 * half], 4 * g + s);
      const uint32_t aRow8 = __shfl_sync(0xFFFFFFFFu, a[2 * half + 1], 4 * g + s);
      const uint32_t bCol0 = __shfl_sync(0xFFFFFFFFu, b[half], 4 * (2 * t) + s);
      const uint32_t bCol1 = __shfl_sync(0xFFFFFFFFu, b[half], 4 * (2 * t + 1) + s);
      sum[0] += pairLo(aRow0) * pairLo(bCol0);
      sum[0] += pairHi(aRow0) * pairHi(bCol0);
      sum[1] += pairLo(aRow0) * pairLo(bCol1);
      sum[1] += pairHi(aRow0) * pairHi(bCol1);
      sum[2] += pairLo(aRow8) * pairLo(bCol0);
      sum[2] += pairHi(aRow8) * pairHi(bCol0);
      sum[3] += pairLo(aRow8) * pairLo(bCol1);
      sum[3] += pairHi(aRow8) * pairHi(bCol1);
    }
  }
  for (int i = 0; i < 4; ++i) c[i] = sum[i];
#endif
}

KVC_CUDA_NAMESPACE_END
