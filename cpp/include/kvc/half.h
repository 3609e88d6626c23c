// IEEE binary16 and bfloat16 <-> float conversions, scalar, usable from host C++ and
// CUDA device code. Rounding is to nearest even, NaN stays NaN (quiet), as the storage
// formats of ARCHITECTURE §3 require. These are the reference conversions the SIMD
// and CUDA paths are tested against (bit-exact).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define KVC_HD __host__ __device__ __forceinline__
#else
#define KVC_HD inline
#endif

namespace kvc {

KVC_HD uint32_t floatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

KVC_HD float bitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

KVC_HD float halfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1Fu) return bitsToFloat(sign | 0x7F800000u | (mantissa << 13));  // inf / nan
  if (exponent == 0) {
    if (mantissa == 0) return bitsToFloat(sign);
    // Subnormal half: normalize into a float exponent.
    exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    mantissa &= 0x3FFu;
    return bitsToFloat(sign | (exponent << 23) | (mantissa << 13));
  }
  return bitsToFloat(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

KVC_HD uint16_t floatToHalf(float f) {
  const uint32_t x = floatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7FFFFFFFu;
  if (absx >= 0x7F800000u) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7C00u | (absx > 0x7F800000u ? 0x200u | ((absx >> 13) & 0x3FFu) : 0u));
  }
  if (absx >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520: inf
  if (absx < 0x38800000u) {
    // Result is subnormal (or zero) in half: align the implicit-1 mantissa and round to nearest even.
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to zero
    const uint32_t exponent = absx >> 23;
    const uint32_t mantissa = (absx & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14..24
    uint32_t half = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  // Normal: rebias exponent, round mantissa from 23 to 10 bits, nearest even; carry may bump exponent.
  uint32_t rounded = absx + 0xFFFu + ((absx >> 13) & 1u);
  rounded -= (127u - 15u) << 23;
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

KVC_HD float bf16ToFloat(uint16_t b) { return bitsToFloat(static_cast<uint32_t>(b) << 16); }

KVC_HD uint16_t floatToBf16(float f) {
  const uint32_t x = floatBits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
  const uint32_t rounded = x + 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

// Largest finite binary16 and bfloat16 values. Stored f16 / bf16 elements and the f16
// parameters of int8 / int4 groups (scales, minimums) are clamped to these before rounding,
// so a finite input never becomes Inf (and then NaN) in storage: beyond the range values
// saturate (README "Formats"). Inside the range the clamp changes no bit: what it moves
// (f16 in (65504, 65520), bf16 in (max, max + half an ulp)) rounded to the maximum anyway.
constexpr float kHalfMax = 65504.0f;
constexpr float kBf16Max = 3.38953139e38f;  // bits 0x7F7F0000

KVC_HD float clampToHalfRange(float x) { return x > kHalfMax ? kHalfMax : (x < -kHalfMax ? -kHalfMax : x); }
KVC_HD float clampToBf16Range(float x) { return x > kBf16Max ? kBf16Max : (x < -kBf16Max ? -kBf16Max : x); }

}  // namespace kvc
