// The basis fit of a low-rank stream: the leading eigenvectors of the D x D second-moment
// matrix of its calibration rows, in double precision, by Householder reduction to
// tridiagonal form followed by implicit symmetric QR steps with Wilkinson shifts (Golub &
// Van Loan, "Matrix Computations", algorithms 8.3.1 and 8.3.3), eigenvectors accumulated.
// Why this solver: the fit runs once per basis at a stream's calibration point, on the
// appending thread, so its time is the one spike of streaming low-rank storage. The
// tridiagonal route costs ~(4/3 + 4/3 + ~6) D^3 flops against cyclic Jacobi's ~6 D^3 per sweep
// over ~8 sweeps (measured 7-16x faster than the Jacobi solver it replaced, BENCHMARKS.md),
// with eigenvectors orthonormal to rounding, also for the repeated zero eigenvalues of
// rank-deficient calibration sets.
#include "lowrank_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace kvc::cpu {

namespace {

// A (n x n, symmetric, row-major) = Q T Q^T with T tridiagonal: diagonal a[n], off-diagonal
// b[n - 1]; Q (row-major) receives the accumulated Householder reflections.
void tridiagonalize(std::vector<double>& A, uint32_t n, std::vector<double>& a, std::vector<double>& b,
                    std::vector<double>& Q) {
  Q.assign(static_cast<size_t>(n) * n, 0.0);
  for (uint32_t i = 0; i < n; ++i) Q[static_cast<size_t>(i) * n + i] = 1.0;
  std::vector<double> v(n), p(n), w(n), qv(n);
  for (uint32_t k = 0; k + 2 < n; ++k) {
    const uint32_t m = n - k - 1, o = k + 1;  // the reflection acts on indices [o, n)
    double norm = 0.0;
    for (uint32_t i = 0; i < m; ++i) norm += A[static_cast<size_t>(o + i) * n + k] * A[static_cast<size_t>(o + i) * n + k];
    norm = std::sqrt(norm);
    if (norm == 0.0) continue;
    const double x0 = A[static_cast<size_t>(o) * n + k];
    // alpha has the sign opposite to x0, so v = x - alpha e1 does not cancel.
    const double alpha = x0 > 0 ? -norm : norm;
    for (uint32_t i = 0; i < m; ++i) v[i] = A[static_cast<size_t>(o + i) * n + k];
    v[0] -= alpha;
    double vn = 0.0;
    for (uint32_t i = 0; i < m; ++i) vn += v[i] * v[i];
    vn = std::sqrt(vn);
    if (vn == 0.0) continue;
    for (uint32_t i = 0; i < m; ++i) v[i] /= vn;
    // S <- H S H with H = I - 2 v v^T: with p = S v, K = v^T p, w = p - K v,
    // H S H = S - 2 (v w^T + w v^T).
    double K = 0.0;
    for (uint32_t i = 0; i < m; ++i) {
      const double* row = &A[static_cast<size_t>(o + i) * n + o];
      double s = 0.0;
      for (uint32_t j = 0; j < m; ++j) s += row[j] * v[j];
      p[i] = s;
      K += v[i] * s;
    }
    for (uint32_t i = 0; i < m; ++i) w[i] = p[i] - K * v[i];
    for (uint32_t i = 0; i < m; ++i) {
      double* row = &A[static_cast<size_t>(o + i) * n + o];
      for (uint32_t j = 0; j < m; ++j) row[j] -= 2.0 * (v[i] * w[j] + w[i] * v[j]);
    }
    A[static_cast<size_t>(o) * n + k] = A[static_cast<size_t>(k) * n + o] = alpha;
    for (uint32_t i = 1; i < m; ++i) A[static_cast<size_t>(o + i) * n + k] = A[static_cast<size_t>(k) * n + o + i] = 0.0;
    // Q[:, o:] <- Q[:, o:] H
    for (uint32_t r = 0; r < n; ++r) {
      double* row = &Q[static_cast<size_t>(r) * n + o];
      double s = 0.0;
      for (uint32_t j = 0; j < m; ++j) s += row[j] * v[j];
      for (uint32_t j = 0; j < m; ++j) row[j] -= 2.0 * s * v[j];
    }
  }
  a.resize(n);
  b.assign(n > 1 ? n - 1 : 0, 0.0);
  for (uint32_t i = 0; i < n; ++i) a[i] = A[static_cast<size_t>(i) * n + i];
  for (uint32_t i = 0; i + 1 < n; ++i) b[i] = A[static_cast<size_t>(i + 1) * n + i];
}

// Diagonalizes the tridiagonal (a, b) in place by implicit QR steps with Wilkinson shifts,
// applying every Givens rotation to the columns of Q. False if it did not converge.
bool tridiagonalQR(std::vector<double>& a, std::vector<double>& b, uint32_t n, std::vector<double>& Q) {
  const double eps = std::numeric_limits<double>::epsilon();
  uint32_t hi = n ? n - 1 : 0;
  uint64_t steps = 0;
  while (hi > 0) {
    if (std::fabs(b[hi - 1]) <= eps * (std::fabs(a[hi - 1]) + std::fabs(a[hi]))) {
      b[hi - 1] = 0.0;
      --hi;
      continue;
    }
    uint32_t lo = hi - 1;
    while (lo > 0 && std::fabs(b[lo - 1]) > eps * (std::fabs(a[lo - 1]) + std::fabs(a[lo]))) --lo;
    if (++steps > 60ull * n) return false;
    // Wilkinson shift: the eigenvalue of the trailing 2 x 2 block closer to a[hi].
    const double d = (a[hi - 1] - a[hi]) / 2.0;
    const double bb = b[hi - 1] * b[hi - 1];
    const double mu = a[hi] - bb / (d + (d >= 0 ? 1.0 : -1.0) * std::sqrt(d * d + bb));
    double x = a[lo] - mu, z = b[lo];
    for (uint32_t k = lo; k < hi; ++k) {
      // G = [[c, -s], [s, c]] in the (k, k+1) plane with G^T (x, z) = (r, 0).
      const double r = std::hypot(x, z);
      const double c = r == 0.0 ? 1.0 : x / r, s = r == 0.0 ? 0.0 : z / r;
      if (k > lo) b[k - 1] = r;
      const double ak = a[k], ak1 = a[k + 1], bk = b[k];
      a[k] = c * c * ak + 2.0 * c * s * bk + s * s * ak1;
      a[k + 1] = s * s * ak - 2.0 * c * s * bk + c * c * ak1;
      b[k] = c * s * (ak1 - ak) + (c * c - s * s) * bk;
      if (k + 1 < hi) {
        z = s * b[k + 1];  // the bulge at (k + 2, k)
        b[k + 1] *= c;
        x = b[k];
      }
      for (uint32_t i = 0; i < n; ++i) {
        double* row = &Q[static_cast<size_t>(i) * n];
        const double qk = row[k], qk1 = row[k + 1];
        row[k] = c * qk + s * qk1;
        row[k + 1] = -s * qk + c * qk1;
      }
    }
  }
  return true;
}

}  // namespace

Status fitBasisSymmetric(const float* rows, uint32_t n, uint32_t D, uint32_t r, float* basis, double* eigenvalues) {
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
  std::vector<double> a, b, Q;
  tridiagonalize(m, D, a, b, Q);
  if (!tridiagonalQR(a, b, D, Q)) return Status(StatusCode::kInternal, "the basis eigensolver did not converge");
  std::vector<uint32_t> order(D);
  std::iota(order.begin(), order.end(), 0u);
  // Descending eigenvalue; ties by index, so the basis is a function of the rows alone.
  std::stable_sort(order.begin(), order.end(), [&](uint32_t x, uint32_t y) { return a[x] > a[y]; });
  for (uint32_t j = 0; j < r; ++j) {
    const uint32_t col = order[j];
    // Sign: the entry of largest magnitude is positive (eigenvectors are defined up to sign).
    uint32_t arg = 0;
    for (uint32_t d = 1; d < D; ++d) {
      if (std::fabs(Q[static_cast<size_t>(d) * D + col]) > std::fabs(Q[static_cast<size_t>(arg) * D + col])) arg = d;
    }
    const double sign = Q[static_cast<size_t>(arg) * D + col] < 0 ? -1.0 : 1.0;
    for (uint32_t d = 0; d < D; ++d) basis[static_cast<uint64_t>(d) * r + j] = static_cast<float>(sign * Q[static_cast<size_t>(d) * D + col]);
    if (eigenvalues) eigenvalues[j] = a[col];
  }
  return Status::ok();
}

}  // namespace kvc::cpu
