// RoPE as the cache applies it when keys are stored before RoPE (cache option `rope`): the
// channel pairing of each style, the frequencies, the double-precision rotation of queries
// and the cos / sin tables the kernels rotate keys with. Host code only (no CUDA).
//
// Channel d < dims is rotated with its partner: y[d] = x[d] cos(a) + x[partner(d)] s(d) sin(a),
// a = position * theta^(-2i/dims) for the pair i of d, s(d) = -1 for the first channel of a
// pair and +1 for the second. Interleaved (llama2.c, Meta Llama): pairs (2i, 2i+1).
// Half (GPT-NeoX, Hugging Face): pairs (i, i + dims/2). Channels >= dims are not rotated.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "kvc/views.h"

namespace kvc {

// A position is split into kRopeLevels digits of kRopeLevelBits bits; the angle of each digit
// comes from its level's table and the digits are combined by angle addition, so four tables
// of 256 entries cover every int32 position with f32-accurate cos / sin (positions are not
// consecutive after eviction, so no recurrence along the rows).
constexpr uint32_t kRopeLevelBits = 8;
constexpr uint32_t kRopeLevelSize = 1u << kRopeLevelBits;
constexpr uint32_t kRopeLevels = 4;
constexpr double kTwoPi = 6.283185307179586476925286766559;

inline uint32_t ropePair(uint32_t d, uint32_t dims, uint32_t style) { return style == 0 ? d / 2 : d % (dims / 2); }
inline double ropeSign(uint32_t d, uint32_t dims, uint32_t style) {
  return (style == 0 ? (d % 2 == 0) : (d < dims / 2)) ? -1.0 : 1.0;
}
inline double ropeFrequency(double theta, uint32_t dims, uint32_t pair) {
  return std::pow(theta, -2.0 * static_cast<double>(pair) / static_cast<double>(dims));
}

// Rotates x[0, dims) in place by the angles of one position given per pair (cos[j], sin[j]
// of pair j < dims / 2), in double: x0' = x0 cos - x1 sin, x1' = x1 cos + x0 sin.
inline void ropeRotatePairs(float* x, const RopeSpec& spec, const double* cos, const double* sin) {
  const uint32_t half = spec.dims / 2;
  for (uint32_t j = 0; j < half; ++j) {
    const uint32_t d0 = spec.style == 0 ? 2 * j : j, d1 = spec.style == 0 ? 2 * j + 1 : j + half;
    const double x0 = x[d0], x1 = x[d1];
    x[d0] = static_cast<float>(x0 * cos[j] - x1 * sin[j]);
    x[d1] = static_cast<float>(x1 * cos[j] + x0 * sin[j]);
  }
}

// The host rotation of queries: vectors rotated at their positions in
// double precision. The angles of a position are computed once (one sincos per pair) and
// reused while the position repeats, as for the query heads of one token, so a decode step
// costs dims / 2 sincos per stream rather than two per channel and query vector.
class RopeRotator {
 public:
  explicit RopeRotator(const RopeSpec& spec) : spec_(spec), frequency_(spec.dims / 2), cos_(spec.dims / 2), sin_(spec.dims / 2) {
    for (uint32_t j = 0; j < spec.dims / 2; ++j) frequency_[j] = ropeFrequency(spec.theta, spec.dims, j);
  }
  void rotate(float* x, int64_t position) {
    if (position != anglesOf_ || !hasAngles_) {
      for (size_t j = 0; j < frequency_.size(); ++j) {
        const double a = static_cast<double>(position) * frequency_[j];
        cos_[j] = std::cos(a);
        sin_[j] = std::sin(a);
      }
      anglesOf_ = position;
      hasAngles_ = true;
    }
    ropeRotatePairs(x, spec_, cos_.data(), sin_.data());
  }

 private:
  RopeSpec spec_;
  std::vector<double> frequency_, cos_, sin_;
  int64_t anglesOf_ = 0;
  bool hasAngles_ = false;
};

// cos and signed sin per channel for every level: entry (level, j) holds the angle of
// position j << (level * kRopeLevelBits). Each table is [kRopeLevels][kRopeLevelSize][dims].
inline void buildRopeTables(const RopeSpec& spec, std::vector<float>* cosTable, std::vector<float>* sinTable) {
  const uint32_t dims = spec.dims;
  cosTable->resize(static_cast<size_t>(kRopeLevels) * kRopeLevelSize * dims);
  sinTable->resize(cosTable->size());
  for (uint32_t level = 0; level < kRopeLevels; ++level) {
    for (uint32_t j = 0; j < kRopeLevelSize; ++j) {
      const double position = std::ldexp(static_cast<double>(j), static_cast<int>(level * kRopeLevelBits));
      const size_t row = (static_cast<size_t>(level) * kRopeLevelSize + j) * dims;
      for (uint32_t d = 0; d < dims; ++d) {
        // The angle mod 2 pi in double keeps large positions exact to ~1e-16 relative.
        const double a = std::fmod(position * ropeFrequency(spec.theta, dims, ropePair(d, dims, spec.style)), kTwoPi);
        (*cosTable)[row + d] = static_cast<float>(std::cos(a));
        (*sinTable)[row + d] = static_cast<float>(ropeSign(d, dims, spec.style) * std::sin(a));
      }
    }
  }
}

// Host rotation of one row at a time from the level tables above (the sparse key summaries,
// the host low-rank attention, the staging of rope caches for compaction): cos and signed sin
// of `position` for channels [0, dims), the position's base-256 digits combined by angle
// addition in f32 as the CPU kernels do. c and s are scratch of dims floats; the results come
// back through cOut / sOut (pointing into the tables when position < 256).
inline void ropeLevelAngles(const float* cosT, const float* sinT, uint32_t dims, uint32_t position, float* c, float* s,
                            const float** cOut, const float** sOut) {
  const float* ca = cosT + static_cast<size_t>(position & (kRopeLevelSize - 1)) * dims;
  const float* sa = sinT + static_cast<size_t>(position & (kRopeLevelSize - 1)) * dims;
  for (uint32_t level = 1; level < kRopeLevels; ++level) {
    const uint32_t j = (position >> (level * kRopeLevelBits)) & (kRopeLevelSize - 1);
    if (j == 0) continue;
    const size_t row = (static_cast<size_t>(level) * kRopeLevelSize + j) * dims;
    const float* cb = cosT + row;
    const float* sb = sinT + row;
    for (uint32_t d = 0; d < dims; ++d) {
      const float c0 = ca[d], s0 = sa[d];
      c[d] = c0 * cb[d] - s0 * sb[d];
      s[d] = s0 * cb[d] + c0 * sb[d];
    }
    ca = c, sa = s;
  }
  *cOut = ca, *sOut = sa;
}

// Rotates x[0, spec.dims) in place by the angles of ropeLevelAngles (pairs of spec.style).
inline void ropeApply(float* x, const RopeSpec& spec, const float* c, const float* s) {
  const uint32_t half = spec.dims / 2;
  for (uint32_t j = 0; j < half; ++j) {
    const uint32_t d0 = spec.style == 0 ? 2 * j : j, d1 = spec.style == 0 ? 2 * j + 1 : j + half;
    const float x0 = x[d0], x1 = x[d1];
    x[d0] = x0 * c[d0] + x1 * s[d0];
    x[d1] = x1 * c[d1] + x0 * s[d1];
  }
}

}  // namespace kvc
