// Synthetic LLM-like attention streams for quality tests and benchmarks: Gaussian keys that
// drift slowly along the sequence (neighbours look alike, as after RoPE at low frequencies),
// three outlier channels ×8, an attention sink at row 0 aligned with the mean query
// direction, queries that each look at a recent row and at one of a few salient rows anywhere
// (retrieval), and
// Gaussian values.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "reference.h"

namespace kvc::compaction::testing {

struct SyntheticStream {
  uint32_t T = 0, D = 0, n = 0, nHeldOut = 0;
  std::vector<float> keys, values, queries, heldOut;
};

inline SyntheticStream makeSyntheticStream(uint64_t seed, uint32_t T, uint32_t D, uint32_t n, uint32_t nHeldOut) {
  Rng rng(seed);
  SyntheticStream s;
  s.T = T;
  s.D = D;
  s.n = n;
  s.nHeldOut = nHeldOut;
  const uint32_t outliers[3] = {5 % D, 37 % D, 90 % D};
  // Mean query direction u (unit).
  std::vector<double> u(D);
  double norm = 0.0;
  for (double& x : u) {
    x = rng.normal();
    norm += x * x;
  }
  for (double& x : u) x /= std::sqrt(norm);

  s.keys.resize(static_cast<size_t>(T) * D);
  const double rho = 0.6;  // correlation of neighbouring keys
  std::vector<double> prev(D);
  for (double& x : prev) x = rng.normal();
  for (uint32_t t = 0; t < T; ++t) {
    for (uint32_t d = 0; d < D; ++d) {
      prev[d] = rho * prev[d] + std::sqrt(1.0 - rho * rho) * rng.normal();
      s.keys[static_cast<size_t>(t) * D + d] = static_cast<float>(prev[d]);
    }
    for (uint32_t o : outliers) s.keys[static_cast<size_t>(t) * D + o] *= 8.0f;
  }
  // The sink: about 8 logits above a typical key for the mean query.
  for (uint32_t d = 0; d < D; ++d) s.keys[d] = static_cast<float>(30.0 * u[d] + 0.3 * rng.normal());

  s.values = rng.normals(static_cast<size_t>(T) * D);

  // Rows that queries look up from anywhere in the context (names, facts): a fixed set that
  // reference and held-out queries share.
  constexpr uint32_t kSalient = 48;
  uint32_t salient[kSalient];
  for (uint32_t& r : salient) r = 1 + rng.below(T - 1);
  auto makeQueries = [&](uint32_t count, std::vector<float>* out) {
    out->resize(static_cast<size_t>(count) * D);
    for (uint32_t i = 0; i < count; ++i) {
      float* q = out->data() + static_cast<size_t>(i) * D;
      // A recent row (geometric-ish, mean distance ~48) and one row anywhere.
      const uint32_t back = std::min<uint32_t>(T - 1, static_cast<uint32_t>(-48.0 * std::log(1.0 - rng.uniform())));
      const uint32_t recent = T - 1 - back;
      const uint32_t anywhere = salient[rng.below(kSalient)];
      const float* kr = s.keys.data() + static_cast<size_t>(recent) * D;
      const float* ka = s.keys.data() + static_cast<size_t>(anywhere) * D;
      const double gRecent = 0.4 + 0.3 * rng.uniform(), gAny = 0.5 * rng.uniform();
      for (uint32_t d = 0; d < D; ++d) {
        // Down-weight the outlier channels in the key directions so they do not dominate.
        const bool outlier = d == outliers[0] || d == outliers[1] || d == outliers[2];
        const double w = outlier ? 1.0 / 8.0 : 1.0;
        q[d] = static_cast<float>(3.0 * u[d] + 0.5 * rng.normal() + w * (gRecent * kr[d] + gAny * ka[d]));
      }
    }
  };
  makeQueries(n, &s.queries);
  makeQueries(nHeldOut, &s.heldOut);
  return s;
}

}  // namespace kvc::compaction::testing
