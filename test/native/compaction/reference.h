// Plain scalar f64 references for the compaction kernels and a seeded random source. The
// kernels under test are compared against these on fresh random inputs.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace kvc::compaction::testing {

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(uniform() * n); }
  double normal() {
    if (spare_) {
      spare_ = false;
      return spareValue_;
    }
    double u, v, s;
    do {
      u = 2.0 * uniform() - 1.0;
      v = 2.0 * uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = true;
    spareValue_ = v * f;
    return u * f;
  }
  std::vector<float> normals(size_t count, double scale = 1.0) {
    std::vector<float> x(count);
    for (float& v : x) v = static_cast<float>(normal() * scale);
    return x;
  }

 private:
  uint64_t s_;
  bool spare_ = false;
  double spareValue_ = 0.0;
};

// c [M, N] = a [M, K] · b [K, N], all row-major.
inline std::vector<double> refGemm(const float* a, uint32_t lda, const float* b, uint32_t ldb, uint32_t M, uint32_t N,
                                   uint32_t K) {
  std::vector<double> c(static_cast<size_t>(M) * N, 0.0);
  for (uint32_t i = 0; i < M; ++i)
    for (uint32_t k = 0; k < K; ++k) {
      const double aik = a[static_cast<size_t>(i) * lda + k];
      for (uint32_t j = 0; j < N; ++j) c[static_cast<size_t>(i) * N + j] += aik * b[static_cast<size_t>(k) * ldb + j];
    }
  return c;
}

// Lower Cholesky factor of a [n, n] (full storage); empty when not positive definite.
inline std::vector<double> refCholesky(const std::vector<double>& a, uint32_t n) {
  std::vector<double> l(static_cast<size_t>(n) * n, 0.0);
  for (uint32_t j = 0; j < n; ++j) {
    double d = a[static_cast<size_t>(j) * n + j];
    for (uint32_t k = 0; k < j; ++k) d -= l[static_cast<size_t>(j) * n + k] * l[static_cast<size_t>(j) * n + k];
    if (!(d > 0.0)) return {};
    const double ljj = std::sqrt(d);
    l[static_cast<size_t>(j) * n + j] = ljj;
    for (uint32_t i = j + 1; i < n; ++i) {
      double s = a[static_cast<size_t>(i) * n + j];
      for (uint32_t k = 0; k < j; ++k) s -= l[static_cast<size_t>(i) * n + k] * l[static_cast<size_t>(j) * n + k];
      l[static_cast<size_t>(i) * n + j] = s / ljj;
    }
  }
  return l;
}

// Solves a x = b for a small dense system by Gaussian elimination with partial pivoting.
inline bool refSolve(std::vector<double> a, std::vector<double> b, uint32_t n, std::vector<double>* x) {
  for (uint32_t c = 0; c < n; ++c) {
    uint32_t p = c;
    for (uint32_t r = c + 1; r < n; ++r)
      if (std::fabs(a[static_cast<size_t>(r) * n + c]) > std::fabs(a[static_cast<size_t>(p) * n + c])) p = r;
    if (std::fabs(a[static_cast<size_t>(p) * n + c]) < 1e-300) return false;
    if (p != c) {
      for (uint32_t k = 0; k < n; ++k) std::swap(a[static_cast<size_t>(p) * n + k], a[static_cast<size_t>(c) * n + k]);
      std::swap(b[p], b[c]);
    }
    for (uint32_t r = c + 1; r < n; ++r) {
      const double f = a[static_cast<size_t>(r) * n + c] / a[static_cast<size_t>(c) * n + c];
      for (uint32_t k = c; k < n; ++k) a[static_cast<size_t>(r) * n + k] -= f * a[static_cast<size_t>(c) * n + k];
      b[r] -= f * b[c];
    }
  }
  x->assign(n, 0.0);
  for (uint32_t r = n; r-- > 0;) {
    double s = b[r];
    for (uint32_t k = r + 1; k < n; ++k) s -= a[static_cast<size_t>(r) * n + k] * (*x)[k];
    (*x)[r] = s / a[static_cast<size_t>(r) * n + r];
  }
  return true;
}

// ½ wᵀG w − hᵀw.
inline double quadObjective(const std::vector<double>& g, const std::vector<double>& h, const double* w, uint32_t n) {
  double o = 0.0;
  for (uint32_t i = 0; i < n; ++i) {
    double gi = 0.0;
    for (uint32_t j = 0; j < n; ++j) gi += g[static_cast<size_t>(i) * n + j] * w[j];
    o += 0.5 * w[i] * gi - h[i] * w[i];
  }
  return o;
}

// Box-constrained QP by brute force over which variables sit at the lower bound (small n):
// the free ones solve their unconstrained subsystem; the best feasible candidate wins. Exact
// when the upper bound is inactive at the optimum (checked by the caller's choice of bounds).
inline std::vector<double> refNnls(const std::vector<double>& g, const std::vector<double>& h, uint32_t n, double lo) {
  std::vector<double> best(n, lo);
  double bestObj = quadObjective(g, h, best.data(), n);
  for (uint32_t mask = 1; mask < (1u << n); ++mask) {  // bit set: variable free
    std::vector<uint32_t> fr;
    for (uint32_t j = 0; j < n; ++j)
      if (mask & (1u << j)) fr.push_back(j);
    const uint32_t m = static_cast<uint32_t>(fr.size());
    std::vector<double> a(static_cast<size_t>(m) * m), b(m), x;
    for (uint32_t r = 0; r < m; ++r) {
      b[r] = h[fr[r]];
      for (uint32_t j = 0; j < n; ++j)
        if (!(mask & (1u << j))) b[r] -= g[static_cast<size_t>(fr[r]) * n + j] * lo;
      for (uint32_t c = 0; c < m; ++c) a[static_cast<size_t>(r) * m + c] = g[static_cast<size_t>(fr[r]) * n + fr[c]];
    }
    if (!refSolve(a, b, m, &x)) continue;
    std::vector<double> w(n, lo);
    bool feasible = true;
    for (uint32_t r = 0; r < m; ++r) {
      if (x[r] < lo) feasible = false;
      w[fr[r]] = x[r];
    }
    if (!feasible) continue;
    const double obj = quadObjective(g, h, w.data(), n);
    if (obj < bestObj) {
      bestObj = obj;
      best = w;
    }
  }
  return best;
}

// Top-k as a set: sort eligible rows by (score desc, index asc; NaN last), take k, ascending.
inline std::vector<int32_t> refTopK(const std::vector<float>& score, const std::vector<uint8_t>& exclude, uint32_t k) {
  std::vector<int32_t> idx;
  for (uint32_t i = 0; i < score.size(); ++i)
    if (exclude.empty() || !exclude[i]) idx.push_back(static_cast<int32_t>(i));
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
    const float sa = score[a], sb = score[b];
    if (std::isnan(sa) != std::isnan(sb)) return std::isnan(sb);
    if (std::isnan(sa)) return false;
    return sa > sb;
  });
  idx.resize(std::min<size_t>(k, idx.size()));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace kvc::compaction::testing
