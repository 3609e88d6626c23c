// Per-block key summaries of sparse decode (ARCHITECTURE §9), defined once for the CPU
// kernels, the CUDA kernels and the tests' reference: the summary of a block is, per channel,
// the minimum and maximum of its keys as stored (dequantized, in the rotated space), kept as
// bfloat16 rounded outward, so that it bounds every stored key from both sides exactly.
#pragma once
#include <cstdint>

#include "kvc/formats.h"
#include "kvc/half.h"
#include "kvc/views.h"

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

// Where the summary of block `block` lives (formats.h): its entry in the pool's side array,
// maxBeta at the head, lo = bounds[0..D) and hi = bounds[D..2D) after it.
KVC_HD uint8_t* summaryEntry(const PoolView& pool, int32_t block) {
  return pool.summaries + static_cast<uint64_t>(block) * pool.layout.summaryBytes;
}
KVC_HD float* summaryMaxBeta(uint8_t* entry) { return reinterpret_cast<float*>(entry); }
KVC_HD const float* summaryMaxBeta(const uint8_t* entry) { return reinterpret_cast<const float*>(entry); }
KVC_HD uint16_t* summaryBounds(uint8_t* entry) { return reinterpret_cast<uint16_t*>(entry + 16); }
KVC_HD const uint16_t* summaryBounds(const uint8_t* entry) { return reinterpret_cast<const uint16_t*>(entry + 16); }

// One term of the logit bound: the largest q_d * k_d over k_d in [lo, hi].
KVC_HD float boundTerm(float q, float lo, float hi) {
  const float a = q * lo, b = q * hi;
  return a > b ? a : b;
}

}  // namespace kvc
