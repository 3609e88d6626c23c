// Device-side encoding and decoding of one row in the formats of kvc/formats.h: element
// decode for attention and readRows, and warp-cooperative quantization for append. The
// formulas are the contract the CPU reference in the tests mirrors.
#pragma once
#include <cstdint>

#include "../compat.cuh"
#include "kvc/formats.h"
#include "kvc/half.h"

#define KVC_DEVICE __device__ __forceinline__

KVC_CUDA_NAMESPACE_BEGIN

KVC_DEVICE float loadHalf(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));  // hardware conversion, exact like halfToFloat
#else
  return halfToFloat(h);
#endif
}

KVC_DEVICE uint16_t loadU16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }

// Element d of a row (0 <= d < headDim). Dequantization is one fused multiply-add, so that
// the device and the host reference round identically.
KVC_DEVICE float decodeElement(const uint8_t* row, Storage s, uint32_t headDim, uint32_t groupSize, uint32_t d) {
  switch (s) {
    case Storage::kF32: return reinterpret_cast<const float*>(row)[d];
    case Storage::kF16: return loadHalf(reinterpret_cast<const uint16_t*>(row)[d]);
    case Storage::kBF16: return bf16ToFloat(reinterpret_cast<const uint16_t*>(row)[d]);
    case Storage::kInt8: {
      const float scale = loadHalf(loadU16(row + headDim + 2 * (d / groupSize)));
      return static_cast<float>(static_cast<int8_t>(row[d])) * scale;
    }
    case Storage::kInt4: {
      const uint32_t g = d / groupSize, j = d % groupSize, half = groupSize / 2;
      const uint8_t byte = row[g * half + (j < half ? j : j - half)];
      const uint32_t q = j < half ? (byte & 0xFu) : (byte >> 4);
      const uint8_t* sm = row + headDim / 2 + 4 * g;
      return fmaf(static_cast<float>(q), loadHalf(loadU16(sm)), loadHalf(loadU16(sm + 2)));
    }
  }
  return 0.0f;
}

// Writes the row x[headDim] (shared memory, already rotated) into `dst` in format s. One warp
// per row; `aux` is warp-private shared scratch of headDim floats for the per-group scales.
//   int8: scale = f16(sat(absmax / 127)), q = clamp(rint(x · (1 / scale)), -127, 127), 0 if scale == 0
//   int4: scale = f16(sat((max - min) / 15)), m = f16(sat(min)), q = clamp(rint((x - m) · (1 / scale)), 0, 15)
//   (sat = clampToHalfRange: finite inputs never give an Inf parameter; f16 / bf16 elements
//   saturate the same way)
// Quantization multiplies by the reciprocal of the f16-rounded scale (the one dequantization
// multiplies by), exactly as the CPU encoders do: x / scale and x · (1 / scale) can round to
// different sides of a .5 boundary, and the stored bytes must not depend on the device.
KVC_DEVICE void encodeRowWarp(const float* x, float* aux, uint8_t* dst, Storage s, uint32_t headDim,
                              uint32_t groupSize, unsigned lane) {
  const uint32_t D = headDim;
  switch (s) {
    case Storage::kF32:
      for (uint32_t d = lane; d < D; d += 32) reinterpret_cast<float*>(dst)[d] = x[d];
      return;
    case Storage::kF16:
      for (uint32_t d = lane; d < D; d += 32) reinterpret_cast<uint16_t*>(dst)[d] = floatToHalf(clampToHalfRange(x[d]));
      if (D % 2 && lane == 0) reinterpret_cast<uint16_t*>(dst)[D] = 0;  // row padding
      return;
    case Storage::kBF16:
      for (uint32_t d = lane; d < D; d += 32) reinterpret_cast<uint16_t*>(dst)[d] = floatToBf16(clampToBf16Range(x[d]));
      if (D % 2 && lane == 0) reinterpret_cast<uint16_t*>(dst)[D] = 0;
      return;
    case Storage::kInt8: {
      const uint32_t groups = D / groupSize;
      for (uint32_t g = lane; g < groups; g += 32) {
        float absmax = 0.0f;
        for (uint32_t j = 0; j < groupSize; ++j) absmax = fmaxf(absmax, fabsf(x[g * groupSize + j]));
        const uint16_t scaleBits = floatToHalf(clampToHalfRange(absmax / 127.0f));
        reinterpret_cast<uint16_t*>(dst + D)[g] = scaleBits;
        aux[g] = loadHalf(scaleBits);
      }
      // Row padding after the scales (rows are padded to 4 bytes).
      for (uint32_t b = D + 2 * groups + lane; b < alignUp(D + 2 * groups, 4); b += 32) dst[b] = 0;
      __syncwarp();
      for (uint32_t d = lane; d < D; d += 32) {
        const float scale = aux[d / groupSize];
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        float q = rintf(x[d] * inv);
        q = fminf(fmaxf(q, -127.0f), 127.0f);
        dst[d] = static_cast<uint8_t>(static_cast<int8_t>(q));
      }
      __syncwarp();
      return;
    }
    case Storage::kInt4: {
      const uint32_t groups = D / groupSize, half = groupSize / 2;
      for (uint32_t g = lane; g < groups; g += 32) {
        float lo = x[g * groupSize], hi = lo;
        for (uint32_t j = 1; j < groupSize; ++j) {
          lo = fminf(lo, x[g * groupSize + j]);
          hi = fmaxf(hi, x[g * groupSize + j]);
        }
        const uint16_t scaleBits = floatToHalf(clampToHalfRange((hi - lo) / 15.0f));
        const uint16_t minBits = floatToHalf(clampToHalfRange(lo));
        uint16_t* sm = reinterpret_cast<uint16_t*>(dst + D / 2 + 4 * g);
        sm[0] = scaleBits;
        sm[1] = minBits;
        aux[2 * g] = loadHalf(scaleBits);
        aux[2 * g + 1] = loadHalf(minBits);
      }
      for (uint32_t b = D / 2 + 4 * groups + lane; b < alignUp(D / 2 + 4 * groups, 4); b += 32) dst[b] = 0;
      __syncwarp();
      for (uint32_t b = lane; b < D / 2; b += 32) {
        const uint32_t g = b / half, j = b % half;
        const float scale = aux[2 * g], mn = aux[2 * g + 1];
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        float q0 = rintf((x[g * groupSize + j] - mn) * inv);
        float q1 = rintf((x[g * groupSize + j + half] - mn) * inv);
        q0 = fminf(fmaxf(q0, 0.0f), 15.0f);
        q1 = fminf(fmaxf(q1, 0.0f), 15.0f);
        dst[b] = static_cast<uint8_t>(static_cast<uint32_t>(q0) | (static_cast<uint32_t>(q1) << 4));
      }
      __syncwarp();
      return;
    }
  }
}

KVC_CUDA_NAMESPACE_END
