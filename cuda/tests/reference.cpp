// Scalar reference implementation for the CUDA kernel tests (see reference.h).
#include "reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kvc/half.h"

namespace kvcref {

namespace {

void butterflies(float* x, uint32_t D) {
  for (uint32_t h = 1; h < D; h *= 2) {
    for (uint32_t i = 0; i < D; i += 2 * h) {
      for (uint32_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}

float loadHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return kvc::halfToFloat(h);
}

void storeU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

}  // namespace

void rotateForward(float* x, const float* signs, uint32_t D) {
  for (uint32_t d = 0; d < D; ++d) x[d] *= signs[d];
  butterflies(x, D);
  const float norm = 1.0f / std::sqrt(static_cast<float>(D));
  for (uint32_t d = 0; d < D; ++d) x[d] *= norm;
}

void rotateInverse(float* x, const float* signs, uint32_t D) {
  butterflies(x, D);
  const float norm = 1.0f / std::sqrt(static_cast<float>(D));
  for (uint32_t d = 0; d < D; ++d) x[d] = x[d] * norm * signs[d];
}

void denseRotateInverse(double* x, const float* signs, uint32_t D) {
  std::vector<double> y(x, x + D);
  for (uint32_t i = 0; i < D; ++i) {
    double sum = 0;
    for (uint32_t j = 0; j < D; ++j) sum += (__builtin_popcount(i & j) & 1 ? -1.0 : 1.0) * y[j];
    x[i] = sum / std::sqrt(static_cast<double>(D)) * signs[i];
  }
}

std::vector<uint8_t> encodeRow(const float* input, Storage s, uint32_t D, uint32_t G, const float* signs) {
  std::vector<float> x(input, input + D);
  if (signs) rotateForward(x.data(), signs, D);
  std::vector<uint8_t> row(kvc::rowBytes(s, D, G), 0);
  switch (s) {
    case Storage::kF32: std::memcpy(row.data(), x.data(), 4 * D); break;
    case Storage::kF16:
      for (uint32_t d = 0; d < D; ++d) storeU16(&row[2 * d], kvc::floatToHalf(kvc::clampToHalfRange(x[d])));
      break;
    case Storage::kBF16:
      for (uint32_t d = 0; d < D; ++d) storeU16(&row[2 * d], kvc::floatToBf16(kvc::clampToBf16Range(x[d])));
      break;
    case Storage::kInt8:
      for (uint32_t g = 0; g < D / G; ++g) {
        float absmax = 0;
        for (uint32_t j = 0; j < G; ++j) absmax = std::max(absmax, std::fabs(x[g * G + j]));
        const uint16_t bits = kvc::floatToHalf(kvc::clampToHalfRange(absmax / 127.0f));
        storeU16(&row[D + 2 * g], bits);
        const float scale = kvc::halfToFloat(bits);
        const float inv = scale > 0 ? 1.0f / scale : 0.0f;  // the CPU encoders' rounding
        for (uint32_t j = 0; j < G; ++j) {
          float q = std::nearbyint(x[g * G + j] * inv);
          q = std::min(std::max(q, -127.0f), 127.0f);
          row[g * G + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
        }
      }
      break;
    case Storage::kInt4:
      for (uint32_t g = 0; g < D / G; ++g) {
        float lo = x[g * G], hi = lo;
        for (uint32_t j = 1; j < G; ++j) {
          lo = std::min(lo, x[g * G + j]);
          hi = std::max(hi, x[g * G + j]);
        }
        const uint16_t scaleBits = kvc::floatToHalf(kvc::clampToHalfRange((hi - lo) / 15.0f));
        const uint16_t minBits = kvc::floatToHalf(kvc::clampToHalfRange(lo));
        storeU16(&row[D / 2 + 4 * g], scaleBits);
        storeU16(&row[D / 2 + 4 * g + 2], minBits);
        const float scale = kvc::halfToFloat(scaleBits), mn = kvc::halfToFloat(minBits);
        const float inv = scale > 0 ? 1.0f / scale : 0.0f;
        for (uint32_t j = 0; j < G; ++j) {
          float q = std::nearbyint((x[g * G + j] - mn) * inv);
          q = std::min(std::max(q, 0.0f), 15.0f);
          // Element j of the group: low nibble of byte j (j < G/2), else high nibble of byte j - G/2.
          const uint32_t byte = g * G / 2 + (j < G / 2 ? j : j - G / 2);
          row[byte] = static_cast<uint8_t>(row[byte] | (static_cast<uint32_t>(q) << (j < G / 2 ? 0 : 4)));
        }
      }
      break;
  }
  return row;
}

void decodeRowStored(const uint8_t* row, Storage s, uint32_t D, uint32_t G, float* out) {
  for (uint32_t d = 0; d < D; ++d) {
    switch (s) {
      case Storage::kF32: std::memcpy(&out[d], row + 4 * d, 4); break;
      case Storage::kF16: out[d] = loadHalf(row + 2 * d); break;
      case Storage::kBF16: {
        uint16_t b;
        std::memcpy(&b, row + 2 * d, 2);
        out[d] = kvc::bf16ToFloat(b);
        break;
      }
      case Storage::kInt8:
        out[d] = static_cast<float>(static_cast<int8_t>(row[d])) * loadHalf(row + D + 2 * (d / G));
        break;
      case Storage::kInt4: {
        const uint32_t g = d / G, j = d % G;
        const uint8_t byte = row[g * G / 2 + (j < G / 2 ? j : j - G / 2)];
        const uint32_t q = j < G / 2 ? (byte & 15u) : (byte >> 4);
        out[d] = std::fma(static_cast<float>(q), loadHalf(row + D / 2 + 4 * g), loadHalf(row + D / 2 + 4 * g + 2));
        break;
      }
    }
  }
}

AttentionResult attention(const std::vector<RefRow>& rows, const float* q, uint32_t D, double scale, int32_t cutoff) {
  AttentionResult r;
  r.out.assign(D, 0.0);
  r.mass.assign(rows.size(), 0.0);
  std::vector<double> logits(rows.size(), -std::numeric_limits<double>::infinity());
  double m = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].position > cutoff) continue;
    double dot = 0;
    for (uint32_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * rows[i].key[d];
    logits[i] = scale * dot + rows[i].beta;
    m = std::max(m, logits[i]);
  }
  if (m == -std::numeric_limits<double>::infinity()) {
    r.lse = m;
    return r;
  }
  double l = 0;
  for (size_t i = 0; i < rows.size(); ++i) l += std::exp(logits[i] - m);
  for (size_t i = 0; i < rows.size(); ++i) {
    const double p = std::exp(logits[i] - m) / l;
    r.mass[i] = p;
    for (uint32_t d = 0; d < D; ++d) r.out[d] += p * rows[i].value[d];
  }
  r.lse = m + std::log(l);
  return r;
}

}  // namespace kvcref
