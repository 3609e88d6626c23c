// Normalized fast Walsh-Hadamard rotation with sign flips: y = H diag(signs) x / sqrt(D).
// Orthogonal, so q.k = (Rq).(Rk): keys are rotated when stored, queries at attention time,
// and (when values are rotated) the attention output is rotated back with the inverse.
#pragma once
#include <cmath>
#include <cstdint>

namespace kvc::cpu {

inline void walshHadamard(float* x, uint32_t D) {
  for (uint32_t len = 1; len < D; len <<= 1) {
    for (uint32_t i = 0; i < D; i += len << 1) {
      for (uint32_t j = i; j < i + len; ++j) {
        const float a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
    }
  }
}

inline void rotateForward(float* x, const float* signs, uint32_t D) {
  for (uint32_t i = 0; i < D; ++i) x[i] *= signs[i];
  walshHadamard(x, D);
  const float norm = 1.0f / std::sqrt(static_cast<float>(D));
  for (uint32_t i = 0; i < D; ++i) x[i] *= norm;
}

inline void rotateInverse(float* x, const float* signs, uint32_t D) {
  walshHadamard(x, D);
  const float norm = 1.0f / std::sqrt(static_cast<float>(D));
  for (uint32_t i = 0; i < D; ++i) x[i] *= norm * signs[i];
}

}  // namespace kvc::cpu
