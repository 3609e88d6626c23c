// Portable "SIMD" of width 1: the fallback every x86-64 (and non-x86) machine can run,
// and the same formulas as the vector paths (including the exp polynomial).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kvc/half.h"

namespace kvc::cpu {

struct SimdScalar {
  static constexpr int W = 1;
  using V = float;
  static const char* name() { return "portable"; }
  static float halfScalar(uint16_t h) { return halfToFloat(h); }
  static V zero() { return 0.0f; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V set1(float x) { return x; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V mul(V a, V b) { return a * b; }
  static V add(V a, V b) { return a + b; }
  static V max(V a, V b) { return a > b ? a : b; }
  static float reduce(V v) { return v; }
  static float reduceMax(V v) { return v; }
  static void reduce4(V a, V b, V c, V d, float* out) { out[0] = a; out[1] = b; out[2] = c; out[3] = d; }
  static void storeDots4x4(const V (&acc)[4][4], float scale, const float* beta, float* out, uint32_t stride) {
    for (int j = 0; j < 4; ++j) {
      for (int i = 0; i < 4; ++i) out[j * stride + i] = acc[i][j] * scale + beta[i];
    }
  }
  static V loadF16(const uint16_t* p) { return halfToFloat(*p); }
  static V loadBf16(const uint16_t* p) { return bf16ToFloat(*p); }
  static V loadI8(const int8_t* p) { return static_cast<float>(*p); }
  static V loadU4Lo(const uint8_t* p) { return static_cast<float>(*p & 0x0F); }
  static V loadU4Hi(const uint8_t* p) { return static_cast<float>(*p >> 4); }
  static void loadU4Pair(const uint8_t* p, V& lo, V& hi) {
    lo = static_cast<float>(*p & 0x0F);
    hi = static_cast<float>(*p >> 4);
  }
  static void gatherHalfPair(const uint8_t* p, uint32_t, uint32_t count, V& first, V& second) {
    uint16_t h[2] = {0, 0};
    if (count) std::memcpy(h, p, 4);
    first = halfToFloat(h[0]);
    second = halfToFloat(h[1]);
  }
  static void storeF16(uint16_t* p, V v) { *p = floatToHalf(v); }
  static void storeBf16(uint16_t* p, V v) { *p = floatToBf16(v); }
  // exp(x) with the vector paths' polynomial; exactly 0 below the float range.
  static V exp(V x) {
    if (x < -87.3f) return 0.0f;
    // Written as min(x, 88) with the vector min's NaN rule (the second operand): NaN becomes 88
    // as in the AVX2/AVX-512 paths, instead of reaching the float -> int conversion (undefined).
    x = x < 88.0f ? x : 88.0f;
    const float n = std::nearbyint(x * 1.44269504088896341f);
    const float f = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
    float p = 1.0f / 720;
    p = p * f + 1.0f / 120;
    p = p * f + 1.0f / 24;
    p = p * f + 1.0f / 6;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    return p * scale;
  }
};

}  // namespace kvc::cpu
