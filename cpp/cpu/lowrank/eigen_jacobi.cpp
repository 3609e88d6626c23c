// The basis fit of a low-rank stream: the leading eigenvectors of the D x D second-moment
// matrix of its calibration rows, by the cyclic Jacobi method in double precision.
// Why Jacobi: D is at most a few hundred, the matrix is symmetric positive semidefinite, and
// Jacobi is short, needs no workspace beyond the matrix and its eigenvectors, and computes
// eigenvectors to full working accuracy (orthonormal to ~1e-15) even for clustered or
// zero eigenvalues (rank-deficient calibration sets). Householder tridiagonalization + QL is
// ~3x cheaper per fit; a fit runs once per stream (at its calibration point), which measured
// 4 ms at D = 64 and 30 ms at D = 128 (BENCHMARKS.md), so simplicity won.
#include "lowrank_cpu.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace kvc::cpu {

namespace {

// Cyclic Jacobi: A (n x n, row-major, symmetric) is diagonalized in place; V receives the
// eigenvectors as columns. Each rotation zeroes a[p][q]; sweeps repeat until the
// off-diagonal mass is negligible relative to the whole matrix.
void jacobiEigen(std::vector<double>& a, uint32_t n, std::vector<double>& v) {
  v.assign(static_cast<size_t>(n) * n, 0.0);
  for (uint32_t i = 0; i < n; ++i) v[static_cast<size_t>(i) * n + i] = 1.0;
  double total = 0.0;
  for (double x : a) total += x * x;
  if (total == 0.0) return;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0.0;
    for (uint32_t p = 0; p < n; ++p) {
      for (uint32_t q = p + 1; q < n; ++q) off += a[static_cast<size_t>(p) * n + q] * a[static_cast<size_t>(p) * n + q];
    }
    if (off <= 1e-30 * total) break;
    for (uint32_t p = 0; p < n; ++p) {
      for (uint32_t q = p + 1; q < n; ++q) {
        const double apq = a[static_cast<size_t>(p) * n + q];
        if (apq == 0.0) continue;
        const double app = a[static_cast<size_t>(p) * n + p], aqq = a[static_cast<size_t>(q) * n + q];
        // Skip rotations below rounding of both diagonal entries (standard threshold).
        if (sweep > 3 && std::fabs(apq) < 1e-18 * (std::fabs(app) + std::fabs(aqq))) {
          a[static_cast<size_t>(p) * n + q] = a[static_cast<size_t>(q) * n + p] = 0.0;
          continue;
        }
        const double theta = (aqq - app) / (2.0 * apq);
        // The smaller root of t^2 + 2 theta t - 1 = 0 (rotation angle at most pi/4: stable).
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        // A <- J^T A J with J = [[c, s], [-s, c]] in rows/columns (p, q).
        for (uint32_t k = 0; k < n; ++k) {
          double* rk = &a[static_cast<size_t>(k) * n];
          const double akp = rk[p], akq = rk[q];
          rk[p] = c * akp - s * akq;
          rk[q] = s * akp + c * akq;
        }
        double* rp = &a[static_cast<size_t>(p) * n];
        double* rq = &a[static_cast<size_t>(q) * n];
        for (uint32_t k = 0; k < n; ++k) {
          const double apk = rp[k], aqk = rq[k];
          rp[k] = c * apk - s * aqk;
          rq[k] = s * apk + c * aqk;
        }
        rp[q] = rq[p] = 0.0;
        for (uint32_t k = 0; k < n; ++k) {
          double* vk = &v[static_cast<size_t>(k) * n];
          const double vkp = vk[p], vkq = vk[q];
          vk[p] = c * vkp - s * vkq;
          vk[q] = s * vkp + c * vkq;
        }
      }
    }
  }
}

}  // namespace

Status fitBasisJacobi(const float* rows, uint32_t n, uint32_t D, uint32_t r, float* basis, double* eigenvalues) {
  if (r == 0 || r > D) return invalidArgument("rank must be in [1, headDim]");
  std::vector<double> m(static_cast<size_t>(D) * D, 0.0);
  for (uint32_t i = 0; i < n; ++i) {
    const float* x = rows + static_cast<uint64_t>(i) * D;
    for (uint32_t p = 0; p < D; ++p) {
      const double xp = x[p];
      double* mp = &m[static_cast<size_t>(p) * D];
      for (uint32_t q = p; q < D; ++q) mp[q] += xp * x[q];
    }
  }
  for (uint32_t p = 0; p < D; ++p) {
    for (uint32_t q = p + 1; q < D; ++q) m[static_cast<size_t>(q) * D + p] = m[static_cast<size_t>(p) * D + q];
  }
  std::vector<double> v;
  jacobiEigen(m, D, v);
  std::vector<uint32_t> order(D);
  std::iota(order.begin(), order.end(), 0u);
  // Descending eigenvalue; ties by index, so the basis is a function of the rows alone.
  std::stable_sort(order.begin(), order.end(), [&](uint32_t x, uint32_t y) {
    return m[static_cast<size_t>(x) * D + x] > m[static_cast<size_t>(y) * D + y];
  });
  for (uint32_t j = 0; j < r; ++j) {
    const uint32_t col = order[j];
    // Sign: the entry of largest magnitude is positive (eigenvectors are defined up to sign).
    uint32_t arg = 0;
    for (uint32_t d = 1; d < D; ++d) {
      if (std::fabs(v[static_cast<size_t>(d) * D + col]) > std::fabs(v[static_cast<size_t>(arg) * D + col])) arg = d;
    }
    const double sign = v[static_cast<size_t>(arg) * D + col] < 0 ? -1.0 : 1.0;
    for (uint32_t d = 0; d < D; ++d) basis[static_cast<uint64_t>(d) * r + j] = static_cast<float>(sign * v[static_cast<size_t>(d) * D + col]);
    if (eigenvalues) eigenvalues[j] = m[static_cast<size_t>(col) * D + col];
  }
  return Status::ok();
}

}  // namespace kvc::cpu
