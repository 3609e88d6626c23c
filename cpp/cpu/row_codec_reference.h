// Scalar reference encoding and decoding of one row in every storage format (the
// layouts of kvc/formats.h). Every faster path is tested against these, and readRows,
// export and the portable kernels use them directly.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kvc/formats.h"
#include "kvc/half.h"

namespace kvc::cpu {

// The first zero (+0 or -0) of x[0, n), or +0.
inline float firstZeroReference(const float* x, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    if (x[i] == 0.0f) return x[i];
  }
  return 0.0f;
}

inline void encodeRowReference(Storage s, const float* x, uint32_t D, uint32_t G, uint8_t* out) {
  switch (s) {
    case Storage::kF32:
      std::memcpy(out, x, 4ull * D);
      return;
    case Storage::kF16: {
      uint16_t* o = reinterpret_cast<uint16_t*>(out);
      for (uint32_t i = 0; i < D; ++i) o[i] = floatToHalf(clampToHalfRange(x[i]));
      return;
    }
    case Storage::kBF16: {
      uint16_t* o = reinterpret_cast<uint16_t*>(out);
      for (uint32_t i = 0; i < D; ++i) o[i] = floatToBf16(clampToBf16Range(x[i]));
      return;
    }
    case Storage::kInt8: {
      int8_t* q = reinterpret_cast<int8_t*>(out);
      uint16_t* scales = reinterpret_cast<uint16_t*>(out + D);
      for (uint32_t g0 = 0; g0 < D; g0 += G) {
        float absmax = 0.0f;
        for (uint32_t i = g0; i < g0 + G; ++i) absmax = std::fmax(absmax, std::fabs(x[i]));
        // Quantize with the scale as stored (f16), so that decoding inverts exactly what was rounded.
        // A scale beyond the f16 range saturates (codes then clamp at ±127).
        const uint16_t scaleBits = floatToHalf(clampToHalfRange(absmax / 127.0f));
        const float scale = halfToFloat(scaleBits);
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        for (uint32_t i = g0; i < g0 + G; ++i) {
          const float v = std::nearbyint(x[i] * inv);
          q[i] = static_cast<int8_t>(std::fmax(-127.0f, std::fmin(127.0f, v)));
        }
        scales[g0 / G] = scaleBits;
      }
      const uint32_t used = D + 2 * (D / G);
      std::memset(out + used, 0, rowBytes(s, D, G) - used);
      return;
    }
    case Storage::kInt4: {
      uint16_t* params = reinterpret_cast<uint16_t*>(out + D / 2);
      const uint32_t half = G / 2;
      for (uint32_t g0 = 0; g0 < D; g0 += G) {
        float lo = x[g0], hi = x[g0];
        for (uint32_t i = g0; i < g0 + G; ++i) {
          lo = std::fmin(lo, x[i]);
          hi = std::fmax(hi, x[i]);
        }
        // A zero minimum / maximum takes the sign of the group's first zero, stated here
        // rather than left to how the compiler orders fmin / fmax on equal zeros (the vector
        // encoders apply the same rule: firstZero in quantize_rows.inl).
        if (lo == 0.0f) lo = firstZeroReference(x + g0, G);
        if (hi == 0.0f) hi = firstZeroReference(x + g0, G);
        // Scale and minimum saturate at the f16 range (hi - lo may even overflow f32 to Inf).
        const uint16_t scaleBits = floatToHalf(clampToHalfRange((hi - lo) / 15.0f));
        const uint16_t minBits = floatToHalf(clampToHalfRange(lo));
        const float scale = halfToFloat(scaleBits), mn = halfToFloat(minBits);
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        uint8_t* bytes = out + g0 / 2;
        for (uint32_t j = 0; j < half; ++j) {
          const float a = std::fmax(0.0f, std::fmin(15.0f, std::nearbyint((x[g0 + j] - mn) * inv)));
          const float b = std::fmax(0.0f, std::fmin(15.0f, std::nearbyint((x[g0 + j + half] - mn) * inv)));
          bytes[j] = static_cast<uint8_t>(static_cast<uint32_t>(a) | (static_cast<uint32_t>(b) << 4));
        }
        params[2 * (g0 / G)] = scaleBits;
        params[2 * (g0 / G) + 1] = minBits;
      }
      const uint32_t used = D / 2 + 4 * (D / G);
      std::memset(out + used, 0, rowBytes(s, D, G) - used);
      return;
    }
  }
}

inline void decodeRowReference(Storage s, const uint8_t* row, uint32_t D, uint32_t G, float* x) {
  switch (s) {
    case Storage::kF32:
      std::memcpy(x, row, 4ull * D);
      return;
    case Storage::kF16: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(row);
      for (uint32_t i = 0; i < D; ++i) x[i] = halfToFloat(h[i]);
      return;
    }
    case Storage::kBF16: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(row);
      for (uint32_t i = 0; i < D; ++i) x[i] = bf16ToFloat(h[i]);
      return;
    }
    case Storage::kInt8: {
      const int8_t* q = reinterpret_cast<const int8_t*>(row);
      const uint16_t* scales = reinterpret_cast<const uint16_t*>(row + D);
      for (uint32_t i = 0; i < D; ++i) x[i] = static_cast<float>(q[i]) * halfToFloat(scales[i / G]);
      return;
    }
    case Storage::kInt4: {
      const uint16_t* params = reinterpret_cast<const uint16_t*>(row + D / 2);
      const uint32_t half = G / 2;
      for (uint32_t i = 0; i < D; ++i) {
        const uint32_t g = i / G, o = i % G;
        const uint8_t byte = row[g * half + (o < half ? o : o - half)];
        const uint32_t q = o < half ? (byte & 0x0F) : (byte >> 4);
        x[i] = static_cast<float>(q) * halfToFloat(params[2 * g]) + halfToFloat(params[2 * g + 1]);
      }
      return;
    }
  }
}

}  // namespace kvc::cpu
