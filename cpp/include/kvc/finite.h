// Non-finite inputs are rejected (README "Semantics"): keys, values and queries holding NaN
// or ±Inf fail with INVALID_ARGUMENT before anything changes. These are the host-side scans
// (queries in the core, the CUDA backend's append input) and the one wording of the error;
// the CPU append checks each row inside its fused loop instead (cpp/cpu/append_kernel.inl).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "kvc/formats.h"
#include "kvc/status.h"

namespace kvc {

// Branch-free (vectorizable) scans: exponent bits all ones means Inf or NaN.
inline bool allFiniteF32(const float* x, uint64_t n) {
  uint32_t bad = 0;
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, 4);
    bad |= (bits & 0x7F800000u) == 0x7F800000u;
  }
  return bad == 0;
}

inline bool allFiniteF16(const uint16_t* x, uint64_t n) {
  uint32_t bad = 0;
  for (uint64_t i = 0; i < n; ++i) bad |= (x[i] & 0x7C00u) == 0x7C00u;
  return bad == 0;
}

inline bool allFiniteInput(InputType type, const void* x, uint64_t n) {
  return type == InputType::kF16 ? allFiniteF16(static_cast<const uint16_t*>(x), n)
                                 : allFiniteF32(static_cast<const float*>(x), n);
}

// The first of `rows` rows of D elements holding a NaN or an Inf, or -1.
inline int64_t firstNonFiniteRow(InputType type, const void* x, uint64_t rows, uint32_t D) {
  const size_t rowBytes = (type == InputType::kF16 ? 2u : 4u) * static_cast<size_t>(D);
  for (uint64_t r = 0; r < rows; ++r) {
    if (!allFiniteInput(type, static_cast<const uint8_t*>(x) + r * rowBytes, D)) return static_cast<int64_t>(r);
  }
  return -1;
}

// The error of an append whose row `row` (= token * streams + stream) holds a NaN or an Inf.
inline Status nonFiniteInput(int64_t row, uint32_t streams) {
  return invalidArgument("keys and values must be finite: token " + std::to_string(row / streams) + ", kv head " +
                         std::to_string(row % streams) + " holds NaN or Infinity");
}

}  // namespace kvc
