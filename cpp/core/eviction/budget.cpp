// See budget.h. Every step is plain double arithmetic in a fixed order so that the
// TypeScript reference of the tests reproduces the same integers.
#include "budget.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace kvc {

Status validatePolicy(const PolicySpec& p) {
  if (p.source > ScoreSource::kGiven) return invalidArgument("unknown policy");
  if (p.source == ScoreSource::kObservation) {
    if (p.window == 0) return invalidArgument("snapKV window must be at least 1");
    if (p.pool == 0 || p.pool % 2 == 0) return invalidArgument("snapKV pool must be an odd positive integer");
  }
  return Status::ok();
}

Status validateBudget(const BudgetSpec& b, uint32_t layers) {
  if (b.kind == BudgetSpec::Kind::kRatio && !(b.ratio >= 0 && b.ratio <= 1)) return invalidArgument("budget ratio must be in [0, 1]");
  if (b.kind == BudgetSpec::Kind::kLayerRatios) {
    if (b.layerRatios.size() != layers) return invalidArgument("budget layers must hold one ratio per layer (" + std::to_string(layers) + ")");
    for (double r : b.layerRatios) {
      if (!(r >= 0 && r <= 1)) return invalidArgument("budget layer ratios must be in [0, 1]");
    }
    if (b.pyramid) return invalidArgument("budget layers and schedule 'pyramid' cannot be combined");
  }
  if (!(b.safeguard >= 0 && b.safeguard <= 1)) return invalidArgument("budget safeguard must be in [0, 1]");
  if (!(b.slope >= 0 && b.slope <= 1)) return invalidArgument("budget slope must be in [0, 1]");
  return Status::ok();
}

std::vector<int64_t> apportion(int64_t total, const std::vector<double>& weights, const std::vector<int64_t>& caps) {
  const size_t n = weights.size();
  std::vector<double> x(n, 0.0);
  std::vector<bool> active(n);
  for (size_t i = 0; i < n; ++i) active[i] = caps[i] > 0 && weights[i] > 0;
  double remaining = static_cast<double>(total);
  for (;;) {
    double W = 0;
    for (size_t i = 0; i < n; ++i) if (active[i]) W += weights[i];
    if (W <= 0) break;
    bool clipped = false;
    const double rem = remaining;
    for (size_t i = 0; i < n; ++i) {
      if (active[i] && rem * weights[i] / W >= static_cast<double>(caps[i])) {
        x[i] = static_cast<double>(caps[i]);
        active[i] = false;
        remaining -= static_cast<double>(caps[i]);
        clipped = true;
      }
    }
    if (!clipped) {
      for (size_t i = 0; i < n; ++i) if (active[i]) x[i] = rem * weights[i] / W;
      break;
    }
  }
  std::vector<int64_t> out(n);
  int64_t sum = 0;
  for (size_t i = 0; i < n; ++i) {
    out[i] = std::min<int64_t>(caps[i], static_cast<int64_t>(std::floor(x[i])));
    sum += out[i];
  }
  // Largest remainder; repeated rounds only matter when float error left a bigger deficit.
  while (sum != total) {
    const bool up = sum < total;
    int64_t best = -1;
    double bestFrac = 0;
    for (size_t i = 0; i < n; ++i) {
      if (up ? out[i] >= caps[i] || weights[i] <= 0 : out[i] <= 0) continue;
      const double frac = x[i] - static_cast<double>(out[i]);
      if (best < 0 || (up ? frac > bestFrac : frac < bestFrac)) {
        best = static_cast<int64_t>(i);
        bestFrac = frac;
      }
    }
    if (best < 0) break;  // cannot happen when total <= sum of caps
    out[best] += up ? 1 : -1;
    sum += up ? 1 : -1;
  }
  return out;
}

Status planShares(const CacheConfig& c, const int32_t* lengths, const BudgetSpec& b, std::vector<int64_t>* shares) {
  KVC_RETURN_IF_ERROR(validateBudget(b, c.layers));
  const uint32_t H = c.kvHeads, L = c.layers;
  shares->resize(static_cast<size_t>(L) * H);
  for (uint32_t l = 0; l < L; ++l) {
    for (uint32_t h = 0; h < H; ++h) {
      const int64_t n = lengths[l * H + h];
      int64_t k = 0;
      switch (b.kind) {
        case BudgetSpec::Kind::kKeep: k = std::min<int64_t>(n, b.keep); break;
        case BudgetSpec::Kind::kRatio: k = static_cast<int64_t>(std::floor(b.ratio * static_cast<double>(n) + 0.5)); break;
        case BudgetSpec::Kind::kLayerRatios:
          k = static_cast<int64_t>(std::floor(b.layerRatios[l] * static_cast<double>(n) + 0.5));
          break;
      }
      (*shares)[l * H + h] = std::min(n, std::max<int64_t>(0, k));
    }
  }
  if (!b.pyramid || L < 2) return Status::ok();

  // Pyramid (PyramidKV): the same total, layer weights falling linearly from 1 + slope at the
  // bottom to 1 - slope at the top, capped by each layer's rows; within a layer, heads share
  // in proportion to their lengths.
  int64_t total = 0;
  std::vector<double> layerWeights(L);
  std::vector<int64_t> layerCaps(L, 0);
  for (uint32_t l = 0; l < L; ++l) {
    layerWeights[l] = 1.0 + b.slope * (1.0 - 2.0 * static_cast<double>(l) / static_cast<double>(L - 1));
    for (uint32_t h = 0; h < H; ++h) {
      total += (*shares)[l * H + h];
      layerCaps[l] += lengths[l * H + h];
    }
  }
  // A zero weight (slope 1, top layer) would strand rows if every other layer is full; give
  // it the smallest positive weight so the total is always placed.
  for (double& w : layerWeights) w = std::max(w, 1e-9);
  const std::vector<int64_t> layerTotals = apportion(total, layerWeights, layerCaps);
  for (uint32_t l = 0; l < L; ++l) {
    std::vector<double> w(H);
    std::vector<int64_t> caps(H);
    for (uint32_t h = 0; h < H; ++h) {
      w[h] = static_cast<double>(lengths[l * H + h]);
      caps[h] = lengths[l * H + h];
    }
    const std::vector<int64_t> heads = apportion(layerTotals[l], w, caps);
    for (uint32_t h = 0; h < H; ++h) (*shares)[l * H + h] = heads[h];
  }
  return Status::ok();
}

}  // namespace kvc
