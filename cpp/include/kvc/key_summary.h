// Per-block key summaries of sparse decode (ARCHITECTURE §9), defined once for the CPU
// kernels, the CUDA kernels and the tests' reference: the summary of a block is, per channel,
// the minimum and maximum of its keys as stored (dequantized, in the rotated space), kept as
// bfloat16 rounded outward, so that it bounds every stored key from both sides exactly.
#pragma once
#include <cstdint>

#include "kvc/formats.h"
#include "kvc/half.h"

namespace kvc {

// bfloat16 of x rounded toward -Inf / +Inf (x finite). bf16 is the upper half of an f32, so
// truncation rounds toward zero; one more step away from zero turns it into the other direction.
KVC_HD uint16_t bf16Down(float x) {
  const uint32_t u = floatBits(x);
  const uint16_t t = static_cast<uint16_t>(u >> 16);
  if ((u & 0xFFFFu) == 0) return t;
  return (u >> 31) ? static_cast<uint16_t>(t + 1) : t;  // negative: away from zero is down
}
KVC_HD uint16_t bf16Up(float x) {
  const uint32_t u = floatBits(x);
  const uint16_t t = static_cast<uint16_t>(u >> 16);
  if ((u & 0xFFFFu) == 0) return t;
  return (u >> 31) ? t : static_cast<uint16_t>(t + 1);
}

// Where the summary of a block lives: lo = summary[0..D), hi = summary[D..2D).
KVC_HD uint16_t* blockSummary(uint8_t* block, const BlockLayout& L) {
  return reinterpret_cast<uint16_t*>(block + L.summaryOffset);
}
KVC_HD const uint16_t* blockSummary(const uint8_t* block, const BlockLayout& L) {
  return reinterpret_cast<const uint16_t*>(block + L.summaryOffset);
}

// One term of the logit bound: the largest q_d * k_d over k_d in [lo, hi].
KVC_HD float boundTerm(float q, float lo, float hi) {
  const float a = q * lo, b = q * hi;
  return a > b ? a : b;
}

}  // namespace kvc
