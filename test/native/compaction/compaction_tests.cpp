// Tests of Attention Matching compaction: every kernel of cpp/cpu/compaction against a
// scalar f64 reference (reference.h) for each instruction set this CPU runs, then the
// orchestration of cpp/cpu/compaction (exactness, bias semantics, protected rows, chunks,
// threads, batches, bad input) and its quality on synthetic LLM-like streams.
// Exit status 0 when every check passed; last line "kvc_compaction_tests: N checks, F failures".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu/compaction/compaction.h"
#include "cpu/compaction/kernels.h"
#include "cpu/compaction/topk.h"
#include "cpu/compaction/workspace.h"
#include "cpu/thread_pool.h"
#include "reference.h"
#include "synthetic_stream.h"

using namespace kvc::compaction;
using namespace kvc::compaction::testing;
namespace ck = kvc::cpu::compaction;
using kvc::Status;

namespace {

int checks = 0, failures = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    ++checks;                                              \
    if (!(cond)) {                                         \
      ++failures;                                          \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                            \
      std::printf("\n");                                   \
    }                                                      \
  } while (0)

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Max |got − want| / (atol + rtol·|want|) style check, reported once per array.
bool close(const float* got, const double* want, size_t count, double atol, double rtol, const char* what,
           const char* isa) {
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < count; ++i) {
    const double err = std::fabs(got[i] - want[i]) / (atol + rtol * std::fabs(want[i]));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  const bool ok = worst <= 1.0;
  CHECK(ok, "%s [%s]: element %zu got %.9g want %.9g", what, isa, at, count ? got[at] : 0.0f, count ? want[at] : 0.0);
  return ok;
}

// ---- kernels -------------------------------------------------------------------------------

void testGemm(const ck::CompactionKernels& k, Rng& rng) {
  const uint32_t shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {13, 33, 128}, {48, 100, 300}, {50, 64, 17}, {12, 32, 513}};
  for (const auto& s : shapes) {
    const uint32_t M = s[0], N = s[1], K = s[2];
    const uint32_t lda = K + 3, ldc = N + 5;
    std::vector<float> a = rng.normals(static_cast<size_t>(M) * lda), b = rng.normals(static_cast<size_t>(K) * N);
    std::vector<float> bt(static_cast<size_t>(N) * (K + 1));
    for (uint32_t kk = 0; kk < K; ++kk)
      for (uint32_t j = 0; j < N; ++j) bt[static_cast<size_t>(j) * (K + 1) + kk] = b[static_cast<size_t>(kk) * N + j];
    const std::vector<double> want = refGemm(a.data(), lda, b.data(), N, M, N, K);
    std::vector<float> pa(ck::packedSize(K, N, k.nr), kNaN), pb(ck::packedSize(K, N, k.nr), kNaN);
    k.packRows(b.data(), N, K, N, pa.data());
    k.packTransposed(bt.data(), K + 1, N, K, pb.data());
    CHECK(pa == pb, "[%s] packRows and packTransposed disagree for K=%u N=%u", k.name, K, N);
    std::vector<float> c(static_cast<size_t>(M) * ldc, kNaN), got(static_cast<size_t>(M) * N);
    k.gemm(M, N, K, a.data(), lda, pa.data(), c.data(), ldc, false);
    for (uint32_t i = 0; i < M; ++i)
      for (uint32_t j = 0; j < N; ++j) got[static_cast<size_t>(i) * N + j] = c[static_cast<size_t>(i) * ldc + j];
    // Columns past N are not written: the poison stays.
    bool untouched = true;
    for (uint32_t i = 0; i < M; ++i)
      for (uint32_t j = N; j < ldc; ++j) untouched &= std::isnan(c[static_cast<size_t>(i) * ldc + j]);
    CHECK(untouched, "[%s] gemm wrote past N", k.name);
    const double tol = 2e-6 * std::sqrt(static_cast<double>(K)) * 4;
    close(got.data(), want.data(), got.size(), tol, 1e-5, "gemm", k.name);
    // accumulate = true adds to what is there.
    std::vector<float> base = rng.normals(static_cast<size_t>(M) * ldc);
    c = base;
    k.gemm(M, N, K, a.data(), lda, pa.data(), c.data(), ldc, true);
    std::vector<double> want2(want);
    for (uint32_t i = 0; i < M; ++i)
      for (uint32_t j = 0; j < N; ++j) {
        want2[static_cast<size_t>(i) * N + j] += base[static_cast<size_t>(i) * ldc + j];
        got[static_cast<size_t>(i) * N + j] = c[static_cast<size_t>(i) * ldc + j];
      }
    close(got.data(), want2.data(), got.size(), tol, 1e-5, "gemm accumulate", k.name);
  }
  // gemmRowMajor reads B in place (N a multiple of nr, any row stride): bit-identical to gemm
  // on the packed copy, with and without accumulate, K within one slice and across several.
  for (uint32_t K : {5u, 300u, 600u}) {
    const uint32_t M = 29, N = 2 * k.nr, lda = K + 2, ldb = N + 8, ldc = N + 3;
    const std::vector<float> a = rng.normals(static_cast<size_t>(M) * lda), b = rng.normals(static_cast<size_t>(K) * ldb);
    std::vector<float> packed(ck::packedSize(K, N, k.nr));
    k.packRows(b.data(), ldb, K, N, packed.data());
    for (bool acc : {false, true}) {
      const std::vector<float> base = rng.normals(static_cast<size_t>(M) * ldc);
      std::vector<float> c1(base), c2(base);
      k.gemm(M, N, K, a.data(), lda, packed.data(), c1.data(), ldc, acc);
      k.gemmRowMajor(M, N, K, a.data(), lda, b.data(), ldb, c2.data(), ldc, acc);
      CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0,
            "[%s] gemmRowMajor differs from gemm on the packed copy (K = %u, accumulate %d)", k.name, K, acc ? 1 : 0);
    }
  }
  // N = 1 takes its own path (no panel of padding): every element must equal, bit for bit,
  // column 0 of the same product through the tile (N = 2), also with accumulate and K past
  // one slice.
  for (uint32_t K : {1u, 17u, 256u, 300u, 513u}) {
    const uint32_t M = 53, lda = K + 1;
    const std::vector<float> a = rng.normals(static_cast<size_t>(M) * lda), b = rng.normals(static_cast<size_t>(K) * 2);
    std::vector<float> b1(K);
    for (uint32_t kk = 0; kk < K; ++kk) b1[kk] = b[static_cast<size_t>(kk) * 2];
    std::vector<float> p2(ck::packedSize(K, 2, k.nr)), p1(ck::packedSize(K, 1, k.nr));
    k.packRows(b.data(), 2, K, 2, p2.data());
    k.packRows(b1.data(), 1, K, 1, p1.data());
    for (bool acc : {false, true}) {
      const std::vector<float> base = rng.normals(static_cast<size_t>(M) * 2);
      std::vector<float> c2(base), c1(M);
      for (uint32_t i = 0; i < M; ++i) c1[i] = base[static_cast<size_t>(i) * 2];
      k.gemm(M, 2, K, a.data(), lda, p2.data(), c2.data(), 2, acc);
      k.gemm(M, 1, K, a.data(), lda, p1.data(), c1.data(), 1, acc);
      bool same = true;
      for (uint32_t i = 0; i < M; ++i) same &= std::memcmp(&c1[i], &c2[static_cast<size_t>(i) * 2], sizeof(float)) == 0;
      CHECK(same, "[%s] gemm N = 1 differs from column 0 of N = 2 (K = %u, accumulate %d)", k.name, K, acc ? 1 : 0);
    }
  }
}

void testSoftmaxAndStats(const ck::CompactionKernels& k, Rng& rng) {
  const uint32_t rows = 7, cols = 203, ld = 211;
  std::vector<float> s = rng.normals(static_cast<size_t>(rows) * ld, 3.0), bias = rng.normals(cols);
  std::vector<float> orig(s), rowMax(rows, kNaN), rowSum(rows, kNaN);
  k.softmaxRows(s.data(), ld, rows, cols, bias.data(), rowMax.data(), rowSum.data());
  std::vector<double> wantE(static_cast<size_t>(rows) * cols), wantM(rows), wantZ(rows);
  std::vector<float> gotE(wantE.size());
  for (uint32_t r = 0; r < rows; ++r) {
    double m = -1e300;
    for (uint32_t j = 0; j < cols; ++j) m = std::max(m, static_cast<double>(orig[r * ld + j]) + bias[j]);
    double z = 0.0;
    for (uint32_t j = 0; j < cols; ++j) {
      const double e = std::exp(static_cast<double>(orig[r * ld + j]) + bias[j] - m);
      wantE[r * cols + j] = e;
      gotE[r * cols + j] = s[r * ld + j];
      z += e;
    }
    wantM[r] = m;
    wantZ[r] = z;
  }
  close(gotE.data(), wantE.data(), gotE.size(), 1e-7, 2e-6, "softmaxRows exps", k.name);
  close(rowMax.data(), wantM.data(), rows, 1e-6, 1e-6, "softmaxRows max", k.name);
  close(rowSum.data(), wantZ.data(), rows, 1e-6, 1e-5, "softmaxRows sum", k.name);

  // A row of −inf logits (an empty softmax) gives zeros and a zero sum, not NaN.
  std::vector<float> empty(17, -std::numeric_limits<float>::infinity());
  float em = 0, ez = 1;
  k.softmaxRows(empty.data(), 17, 1, 17, nullptr, &em, &ez);
  CHECK(ez == 0.0f && empty[3] == 0.0f, "[%s] empty softmax row: sum %g", k.name, ez);

  // expAffine
  std::vector<float> x = rng.normals(static_cast<size_t>(rows) * ld, 4.0), ro = rng.normals(rows), co = rng.normals(cols);
  std::vector<float> xo(x);
  k.expAffine(x.data(), ld, rows, cols, ro.data(), co.data());
  std::vector<double> wantX(static_cast<size_t>(rows) * cols);
  for (uint32_t r = 0; r < rows; ++r)
    for (uint32_t j = 0; j < cols; ++j) {
      wantX[r * cols + j] = std::exp(static_cast<double>(xo[r * ld + j]) + ro[r] + co[j]);
      gotE[r * cols + j] = x[r * ld + j];
    }
  close(gotE.data(), wantX.data(), wantX.size(), 1e-30, 3e-6, "expAffine", k.name);

  // accumulateColumnSquares and gemvTransposed
  std::vector<float> scale = rng.normals(rows), acc0 = rng.normals(cols), acc(acc0), vec = rng.normals(rows);
  k.accumulateColumnSquares(xo.data(), ld, rows, cols, scale.data(), acc.data());
  std::vector<double> wantAcc(cols), wantY(cols, 0.0);
  for (uint32_t j = 0; j < cols; ++j) {
    double a = acc0[j];
    for (uint32_t r = 0; r < rows; ++r) {
      const double v = static_cast<double>(xo[r * ld + j]) * scale[r];
      a += v * v;
      wantY[j] += static_cast<double>(xo[r * ld + j]) * vec[r];
    }
    wantAcc[j] = a;
  }
  close(acc.data(), wantAcc.data(), cols, 1e-5, 1e-5, "accumulateColumnSquares", k.name);
  std::vector<float> y(cols, kNaN);
  k.gemvTransposed(xo.data(), ld, rows, cols, vec.data(), y.data());
  close(y.data(), wantY.data(), cols, 1e-5, 1e-5, "gemvTransposed", k.name);
}

std::vector<double> randomSpd(Rng& rng, uint32_t n, double jitter) {
  std::vector<double> b(static_cast<size_t>(n) * n), a(static_cast<size_t>(n) * n, 0.0);
  for (double& x : b) x = rng.normal();
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (uint32_t k = 0; k < n; ++k) s += b[static_cast<size_t>(i) * n + k] * b[static_cast<size_t>(j) * n + k];
      a[static_cast<size_t>(i) * n + j] = s + (i == j ? jitter : 0.0);
    }
  return a;
}

void testCholesky(const ck::CompactionKernels& k, Rng& rng) {
  for (uint32_t n : {1u, 3u, 5u, 8u, 17u, 64u, 133u}) {
    const std::vector<double> a = randomSpd(rng, n, 0.5 * n);
    const std::vector<double> want = refCholesky(a, n);
    std::vector<double> l(a);
    CHECK(k.cholesky(l.data(), n, n), "[%s] cholesky failed on an SPD matrix n=%u", k.name, n);
    double worst = 0.0;
    for (uint32_t i = 0; i < n; ++i)
      for (uint32_t j = 0; j <= i; ++j)
        worst = std::max(worst, std::fabs(l[i * n + j] - want[i * n + j]) / (1e-12 + std::fabs(want[i * n + j])));
    CHECK(worst < 1e-9, "[%s] cholesky n=%u: relative deviation %.3g from the reference", k.name, n, worst);
    for (uint32_t nrhs : {1u, 7u}) {
      std::vector<double> b(static_cast<size_t>(n) * nrhs), x;
      for (double& v : b) v = rng.normal();
      x = b;
      k.choleskySolve(l.data(), n, n, x.data(), nrhs, nrhs);
      double res = 0.0, bn = 0.0;
      for (uint32_t i = 0; i < n; ++i)
        for (uint32_t c = 0; c < nrhs; ++c) {
          double s = 0.0;
          for (uint32_t j = 0; j < n; ++j) s += a[i * n + j] * x[j * nrhs + c];
          res = std::max(res, std::fabs(s - b[i * nrhs + c]));
          bn = std::max(bn, std::fabs(b[i * nrhs + c]));
        }
      CHECK(res < 1e-10 * bn * n, "[%s] choleskySolve n=%u nrhs=%u: residual %.3g", k.name, n, nrhs, res);
    }
  }
  // Not positive definite: false, not NaN.
  std::vector<double> bad = {1.0, 2.0, 2.0, 1.0};
  CHECK(!k.cholesky(bad.data(), 2, 2), "[%s] cholesky accepted an indefinite matrix", k.name);
}

void testNnls(const ck::CompactionKernels& k, Rng& rng) {
  for (int trial = 0; trial < 40; ++trial) {
    const uint32_t n = 1 + rng.below(8), rows = 24;
    // E-like columns (nonnegative, correlated) and a mass target that needs some negative
    // weights to fit exactly, so the bound is active for some trials.
    std::vector<double> m(static_cast<size_t>(rows) * n), z(rows);
    for (double& v : m) v = std::exp(rng.normal());
    for (uint32_t i = 0; i < rows; ++i) z[i] = std::exp(rng.normal()) * 2.0;
    std::vector<double> g(static_cast<size_t>(n) * n, 0.0), h(n, 0.0);
    for (uint32_t a = 0; a < n; ++a) {
      for (uint32_t b = 0; b < n; ++b)
        for (uint32_t i = 0; i < rows; ++i) g[a * n + b] += m[i * n + a] * m[i * n + b];
      for (uint32_t i = 0; i < rows; ++i) h[a] += m[i * n + a] * z[i];
    }
    const double lo = 1e-6, hi = 1e6;
    const std::vector<double> want = refNnls(g, h, n, lo);
    std::vector<double> w(n, 1.0), scratch(n);
    k.nnlsCoordinateDescent(g.data(), n, n, h.data(), lo, hi, 5000, w.data(), scratch.data());
    const double got = quadObjective(g, h, w.data(), n), ref = quadObjective(g, h, want.data(), n);
    bool inBox = true;
    for (double v : w) inBox &= v >= lo && v <= hi;
    CHECK(inBox, "[%s] nnls left the box", k.name);
    CHECK(got <= ref + 1e-9 * (1.0 + std::fabs(ref)), "[%s] nnls n=%u objective %.12g above the reference %.12g",
          k.name, n, got, ref);
  }
}

void testTopKAndPool(Rng& rng) {
  for (int trial = 0; trial < 30; ++trial) {
    const uint32_t n = 1 + rng.below(300), k = rng.below(n + 3);
    std::vector<float> score(n);
    std::vector<uint8_t> exclude(n);
    // Few distinct values: many ties, which the lower index must win.
    for (uint32_t i = 0; i < n; ++i) {
      score[i] = static_cast<float>(rng.below(6));
      if (rng.below(20) == 0) score[i] = kNaN;
      exclude[i] = rng.below(5) == 0;
    }
    std::vector<int32_t> out(n), scratch(n);
    const uint32_t got = ck::selectTopK(score.data(), n, trial % 2 ? exclude.data() : nullptr, k, out.data(), scratch.data());
    out.resize(got);
    const std::vector<int32_t> want = refTopK(score, trial % 2 ? exclude : std::vector<uint8_t>(), k);
    CHECK(out == want, "selectTopK trial %d n=%u k=%u: sets differ (%zu vs %zu rows)", trial, n, k, out.size(), want.size());
  }
  // Worked example of the tie rule: scores [1, 3, 3, 2, 3], k = 2 -> rows 1 and 2 (index 4 loses the tie).
  const float s[5] = {1, 3, 3, 2, 3};
  int32_t out[5], scratch[5];
  const uint32_t got = ck::selectTopK(s, 5, nullptr, 2, out, scratch);
  CHECK(got == 2 && out[0] == 1 && out[1] == 2, "tie rule example: got %u rows [%d, %d]", got, out[0], out[1]);

  const uint32_t n = 37;
  std::vector<float> x = rng.normals(n), y(n);
  for (uint32_t kernel : {1u, 3u, 5u, 8u}) {
    for (int mode = 0; mode < 2; ++mode) {
      ck::pool1d(x.data(), n, kernel, mode ? ck::PoolMode::kAvg : ck::PoolMode::kMax, y.data());
      std::vector<double> want(n);
      for (uint32_t i = 0; i < n; ++i) {
        const int h = static_cast<int>(kernel / 2);
        double m = -1e300, sum = 0.0;
        int cnt = 0;
        for (int j = static_cast<int>(i) - h; j <= static_cast<int>(i) + h; ++j)
          if (j >= 0 && j < static_cast<int>(n)) {
            m = std::max(m, static_cast<double>(x[j]));
            sum += x[j];
            ++cnt;
          }
        want[i] = kernel <= 1 ? x[i] : mode ? sum / cnt : m;
      }
      close(y.data(), want.data(), n, 1e-6, 1e-6, mode ? "pool1d avg" : "pool1d max", "portable");
    }
  }
}

// ---- orchestration -------------------------------------------------------------------------

struct Stream {
  uint32_t T, D, n;
  std::vector<float> keys, values, bias, queries, heldOut;
  std::vector<uint8_t> prot;
  Problem problem(uint32_t target) const {
    Problem p;
    p.keys = keys.data();
    p.values = values.data();
    p.bias = bias.empty() ? nullptr : bias.data();
    p.protectedRows = prot.empty() ? nullptr : prot.data();
    p.T = T;
    p.D = D;
    p.queries = queries.data();
    p.n = n;
    p.heldOutQueries = heldOut.empty() ? nullptr : heldOut.data();
    p.nHeldOut = heldOut.empty() ? 0 : static_cast<uint32_t>(heldOut.size() / D);
    p.target = target;
    return p;
  }
};

Stream randomStream(Rng& rng, uint32_t T, uint32_t D, uint32_t n, uint32_t nHeld, double keyScale) {
  Stream s{T, D, n, {}, {}, {}, {}, {}, {}};
  s.keys = rng.normals(static_cast<size_t>(T) * D, keyScale);
  s.values = rng.normals(static_cast<size_t>(T) * D);
  s.bias = rng.normals(T, 0.5);
  s.queries = rng.normals(static_cast<size_t>(n) * D, keyScale);
  if (nHeld) s.heldOut = rng.normals(static_cast<size_t>(nHeld) * D, keyScale);
  return s;
}

void testExactness(Rng& rng) {
  // n ≫ T: E has full column rank, so w = 1 is the unique mass fit and V the unique value fit.
  Stream s = randomStream(rng, 64, 32, 512, 64, 1.5);
  std::vector<int32_t> all(s.T);
  for (uint32_t j = 0; j < s.T; ++j) all[j] = static_cast<int32_t>(j);
  Result r;
  Options exact;
  exact.ridge = 1e-9f;
  Status st = fitKeepSet(s.problem(s.T), all.data(), s.T, exact, nullptr, &r);
  CHECK(st.isOk(), "fitKeepSet(all rows): %s", st.message().c_str());
  CHECK(r.outputError < 1e-5f, "t = T: output error %.3g", r.outputError);
  CHECK(r.massError < 1e-5f, "t = T: mass error %.3g", r.massError);
  CHECK(r.heldOutOutputError < 1e-5f, "t = T: held-out output error %.3g", r.heldOutOutputError);
  float worstBeta = 0.0f;
  for (uint32_t j = 0; j < s.T; ++j) worstBeta = std::max(worstBeta, std::fabs(r.beta[j] - s.bias[j]));
  CHECK(worstBeta < 1e-3f, "t = T: beta deviates from the old bias by %.3g", worstBeta);

  // target >= T through compact(): nothing to drop, rows returned unchanged.
  st = compact(s.problem(s.T + 5), Options(), nullptr, &r);
  CHECK(st.isOk() && r.keep.size() == s.T, "target > T: %s, %zu rows", st.message().c_str(), r.keep.size());
  CHECK(r.outputError < 1e-6f && r.massError < 1e-6f, "target > T: errors %.3g %.3g", r.outputError, r.massError);
  CHECK(std::equal(r.values.begin(), r.values.end(), s.values.begin()), "target > T: values changed");
}

// Values of another width than the keys (Problem::DV, low-rank values): selection and beta
// depend on keys and queries only, and the value fit is a least-squares problem per value
// dimension, so fitting values A | B (one row = the row of A, then the row of B) gives the
// fits of A and of B side by side. DV = D is the default DV = 0, bit for bit.
void testValueWidth(Rng& rng) {
  const uint32_t T = 160, D = 32, wa = 24, wb = 40;
  Stream s = randomStream(rng, T, D, 256, 0, 1.5);
  const std::vector<float> a = rng.normals(static_cast<size_t>(T) * wa), b = rng.normals(static_cast<size_t>(T) * wb);
  std::vector<float> ab(static_cast<size_t>(T) * (wa + wb));
  for (uint32_t j = 0; j < T; ++j) {
    std::copy(a.begin() + j * wa, a.begin() + (j + 1) * wa, ab.begin() + j * (wa + wb));
    std::copy(b.begin() + j * wb, b.begin() + (j + 1) * wb, ab.begin() + j * (wa + wb) + wa);
  }
  Options o;
  auto run = [&](const std::vector<float>& values, uint32_t DV, Result* r) {
    Problem p = s.problem(40);
    p.values = values.data();
    p.DV = DV;
    const Status st = compact(p, o, nullptr, r);
    CHECK(st.isOk(), "value width %u: %s", DV, st.message().c_str());
  };
  Result ra, rb, rab, rd, r0;
  run(a, wa, &ra);
  run(b, wb, &rb);
  run(ab, wa + wb, &rab);
  CHECK(ra.keep == rab.keep && rb.keep == rab.keep && ra.beta == rab.beta && rb.beta == rab.beta,
        "value width: keep sets or beta depend on the values");
  CHECK(rab.values.size() == rab.keep.size() * (wa + wb), "value width: %zu fitted values", rab.values.size());
  std::vector<float> joined(rab.values.size());
  for (size_t c = 0; c < rab.keep.size(); ++c) {
    std::copy(ra.values.begin() + c * wa, ra.values.begin() + (c + 1) * wa, joined.begin() + c * (wa + wb));
    std::copy(rb.values.begin() + c * wb, rb.values.begin() + (c + 1) * wb, joined.begin() + c * (wa + wb) + wa);
  }
  std::vector<double> want(joined.begin(), joined.end());
  // The same solves; only the GEMM blocking over the value columns differs (f32 sums).
  close(rab.values.data(), want.data(), want.size(), 1e-4, 1e-4, "value width: A | B fit", "portable");
  run(s.values, D, &rd);
  run(s.values, 0, &r0);
  CHECK(rd.keep == r0.keep && rd.beta == r0.beta && rd.values == r0.values && rd.outputError == r0.outputError,
        "DV = D differs from DV = 0");
}

// The reference errors of a compaction (outputError, massError: the compacted rows' attention
// to the reference queries, taken from the value fit's softmax) against a float64 attention
// pass over the rows the result returns; one chunk and several, with protected rows.
void testReferenceErrors(Rng& rng) {
  for (uint32_t chunk : {0u, 96u}) {
    Stream s = randomStream(rng, 300, 32, 256, 0, 1.2);
    s.prot.assign(s.T, 0);
    for (uint32_t j = 0; j < 4; ++j) s.prot[j] = s.prot[s.T - 1 - j] = 1;
    Options o;
    o.chunkSize = chunk;
    Result r;
    const Status st = compact(s.problem(60), o, nullptr, &r);
    CHECK(st.isOk(), "reference errors: %s", st.message().c_str());
    if (!st.isOk()) continue;
    // Per query: softmax over the original rows (bias b) and over the kept ones (beta, fitted
    // values), within each chunk, merged over chunks as log-sum-exp and mass-weighted outputs.
    const uint32_t T = s.T, D = s.D, span = chunk ? chunk : T, t = static_cast<uint32_t>(r.keep.size());
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    double num = 0.0, den = 0.0, mass = 0.0;
    for (uint32_t i = 0; i < s.n; ++i) {
      const float* q = s.queries.data() + static_cast<size_t>(i) * D;
      auto attend = [&](auto rowOf, uint32_t count, auto biasOf, auto valueOf, std::vector<double>* y) {
        std::vector<double> l(count);
        double m = -1e300;
        for (uint32_t c = 0; c < count; ++c) {
          const float* key = s.keys.data() + static_cast<size_t>(rowOf(c)) * D;
          double dot = 0.0;
          for (uint32_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * key[d];
          l[c] = dot * scale + biasOf(c);
          m = std::max(m, l[c]);
        }
        double z = 0.0;
        y->assign(D, 0.0);
        for (uint32_t c = 0; c < count; ++c) {
          const double e = std::exp(l[c] - m);
          z += e;
          const float* v = valueOf(c);
          for (uint32_t d = 0; d < D; ++d) (*y)[d] += e * v[d];
        }
        for (double& x : *y) x /= z;
        return m + std::log(z);
      };
      std::vector<double> yo(D, 0.0), yc(D, 0.0), part;
      double lseO = -1e300, lseC = -1e300;
      auto merge = [&](double lse, const std::vector<double>& y, double* total, std::vector<double>* acc) {
        const double next = std::max(*total, lse) + std::log1p(std::exp(-std::fabs(*total - lse)));
        const double wa = std::exp(*total - next), wb = std::exp(lse - next);
        for (uint32_t d = 0; d < D; ++d) (*acc)[d] = wa * (*acc)[d] + wb * y[d];
        *total = next;
      };
      for (uint32_t r0 = 0; r0 < T; r0 += span) {
        const uint32_t r1 = std::min(T, r0 + span);
        double lse = attend([&](uint32_t c) { return r0 + c; }, r1 - r0, [&](uint32_t c) { return s.bias[r0 + c]; },
                            [&](uint32_t c) { return s.values.data() + static_cast<size_t>(r0 + c) * D; }, &part);
        merge(lse, part, &lseO, &yo);
        std::vector<uint32_t> kept;
        for (uint32_t c = 0; c < t; ++c)
          if (static_cast<uint32_t>(r.keep[c]) >= r0 && static_cast<uint32_t>(r.keep[c]) < r1) kept.push_back(c);
        lse = attend([&](uint32_t c) { return r.keep[kept[c]]; }, static_cast<uint32_t>(kept.size()),
                     [&](uint32_t c) { return static_cast<double>(r.beta[kept[c]]); },
                     [&](uint32_t c) { return r.values.data() + static_cast<size_t>(kept[c]) * D; }, &part);
        merge(lse, part, &lseC, &yc);
      }
      for (uint32_t d = 0; d < D; ++d) {
        num += (yc[d] - yo[d]) * (yc[d] - yo[d]);
        den += yo[d] * yo[d];
      }
      mass += std::fabs(std::exp(lseC - lseO) - 1.0);
    }
    const double wantOut = std::sqrt(num / den), wantMass = mass / s.n;
    CHECK(std::fabs(r.outputError - wantOut) <= 1e-4 * wantOut + 1e-6, "chunk %u: output error %.7g, f64 %.7g", chunk,
          r.outputError, wantOut);
    CHECK(std::fabs(r.massError - wantMass) <= 1e-4 * wantMass + 1e-6, "chunk %u: mass error %.7g, f64 %.7g", chunk,
          r.massError, wantMass);
    CHECK(wantOut > 1e-3, "chunk %u: the compaction is not exact (output error %.3g), so the check can fail", chunk,
          wantOut);
  }
}

void testDuplicateRowsMerge(Rng& rng) {
  // Rows 3j, 3j+1, 3j+2 are copies of one (key, value, bias). Keeping one copy of each, the
  // mass fit must give it weight 3 (beta = b + log 3) and the attention is reproduced exactly.
  const uint32_t groups = 40, D = 16;
  Stream base = randomStream(rng, groups, D, 256, 32, 1.0);
  Stream s = base;
  s.T = groups * 3;
  s.keys.clear();
  s.values.clear();
  s.bias.clear();
  for (uint32_t g = 0; g < groups; ++g)
    for (int c = 0; c < 3; ++c) {
      s.keys.insert(s.keys.end(), base.keys.begin() + g * D, base.keys.begin() + (g + 1) * D);
      s.values.insert(s.values.end(), base.values.begin() + g * D, base.values.begin() + (g + 1) * D);
      s.bias.push_back(base.bias[g]);
    }
  std::vector<int32_t> keep;
  for (uint32_t g = 0; g < groups; ++g) keep.push_back(static_cast<int32_t>(3 * g + (g % 3)));
  Result r;
  Options exact;
  exact.ridge = 1e-9f;  // the default ridge pulls w toward 1; here the data pin w = 3 down
  Status st = fitKeepSet(s.problem(groups), keep.data(), groups, exact, nullptr, &r);
  CHECK(st.isOk(), "duplicates: %s", st.message().c_str());
  float worst = 0.0f;
  for (uint32_t g = 0; g < groups; ++g) worst = std::max(worst, std::fabs(r.beta[g] - (base.bias[g] + std::log(3.0f))));
  CHECK(worst < 1e-3f, "duplicates: beta deviates from b + log 3 by %.3g", worst);
  CHECK(r.outputError < 1e-5f && r.heldOutOutputError < 1e-5f, "duplicates: output errors %.3g / %.3g", r.outputError,
        r.heldOutOutputError);
  CHECK(r.massError < 1e-5f && r.heldOutMassError < 1e-5f, "duplicates: mass errors %.3g / %.3g", r.massError,
        r.heldOutMassError);
}

void testProtectedAndSelection(Rng& rng) {
  Stream s = randomStream(rng, 500, 64, 300, 0, 1.5);
  s.prot.assign(s.T, 0);
  for (uint32_t j : {0u, 1u, 2u, 3u, 250u, 499u}) s.prot[j] = 1;
  for (Method m : {Method::kHighestAttention, Method::kOmp}) {
    Options o;
    o.method = m;
    o.pooling = m == Method::kHighestAttention ? Pooling::kMax : Pooling::kNone;
    o.poolKernel = 5;
    Result r;
    Status st = compact(s.problem(60), o, nullptr, &r);
    const char* name = m == Method::kOmp ? "omp" : "highest-attention";
    CHECK(st.isOk(), "%s: %s", name, st.message().c_str());
    CHECK(r.keep.size() == 60 && r.beta.size() == 60 && r.values.size() == 60u * s.D, "%s: %zu rows kept", name, r.keep.size());
    CHECK(std::is_sorted(r.keep.begin(), r.keep.end()) &&
              std::adjacent_find(r.keep.begin(), r.keep.end()) == r.keep.end(),
          "%s: keep not ascending and unique", name);
    for (uint32_t j = 0; j < s.T; ++j) {
      if (!s.prot[j]) continue;
      const auto it = std::find(r.keep.begin(), r.keep.end(), static_cast<int32_t>(j));
      CHECK(it != r.keep.end(), "%s: protected row %u dropped", name, j);
      if (it == r.keep.end()) continue;
      const size_t c = it - r.keep.begin();
      CHECK(r.beta[c] == s.bias[j], "%s: protected row %u beta %g != b %g", name, j, r.beta[c], s.bias[j]);
      CHECK(std::equal(s.values.begin() + j * s.D, s.values.begin() + (j + 1) * s.D, r.values.begin() + c * s.D),
            "%s: protected row %u value changed", name, j);
    }
    CHECK(std::isfinite(r.outputError) && r.outputError < 0.9f, "%s: output error %.3g", name, r.outputError);
    CHECK(std::isnan(r.heldOutOutputError), "%s: held-out error without held-out queries should be NaN", name);
  }
  // More protected rows than the target: all protected rows, nothing else.
  Result r;
  Status st = compact(s.problem(3), Options(), nullptr, &r);
  CHECK(st.isOk() && r.keep.size() == 6, "protected > target: %zu rows", r.keep.size());
}

void testThreadsChunksBatch(Rng& rng) {
  Stream s = randomStream(rng, 1000, 64, 400, 100, 1.5);
  kvc::cpu::ThreadPool pool(3);
  for (Method m : {Method::kHighestAttention, Method::kOmp}) {
    const char* name = m == Method::kOmp ? "omp" : "highest-attention";
    Options o;
    o.method = m;
    Result serial, threaded;
    compact(s.problem(100), o, nullptr, &serial);
    compact(s.problem(100), o, &pool, &threaded);
    CHECK(serial.status.isOk() && threaded.status.isOk(), "%s threads: %s", name, threaded.status.message().c_str());
    CHECK(serial.keep == threaded.keep, "%s: keep differs between 1 and 3 threads", name);
    CHECK(std::fabs(serial.heldOutOutputError - threaded.heldOutOutputError) < 1e-3f * serial.heldOutOutputError + 1e-6f,
          "%s: held-out error %.6g (1 thread) vs %.6g (3)", name, serial.heldOutOutputError, threaded.heldOutOutputError);

    o.chunkSize = 256;  // chunks 256, 256, 256, 232
    Result chunked;
    Status st = compact(s.problem(100), o, &pool, &chunked);
    CHECK(st.isOk() && chunked.keep.size() == 100, "%s chunked: %s, %zu rows", name, st.message().c_str(),
          chunked.keep.size());
    uint32_t perChunk[4] = {0, 0, 0, 0};
    for (int32_t j : chunked.keep) ++perChunk[j / 256];
    CHECK(perChunk[0] == 26 && perChunk[1] == 25 && perChunk[2] == 26 && perChunk[3] == 23,
          "%s chunked: shares %u %u %u %u (want 26 25 26 23)", name, perChunk[0], perChunk[1], perChunk[2], perChunk[3]);
    CHECK(std::is_sorted(chunked.keep.begin(), chunked.keep.end()), "%s chunked: keep not ascending", name);
    CHECK(chunked.heldOutOutputError < 2.0f * serial.heldOutOutputError + 0.02f,
          "%s chunked: held-out error %.3g vs %.3g unchunked", name, chunked.heldOutOutputError, serial.heldOutOutputError);
  }
  // Batch == one by one, for both batch schedules (streams across threads, threads within a stream).
  std::vector<Stream> streams;
  for (int i = 0; i < 5; ++i) streams.push_back(randomStream(rng, 300 + 50 * i, 32, 128, 0, 1.5));
  std::vector<Problem> problems;
  for (const Stream& st : streams) problems.push_back(st.problem(st.T / 5));
  for (size_t count : {size_t(5), size_t(2)}) {
    std::vector<Result> batch(count);
    Status st = compactBatch(problems.data(), count, Options(), pool, batch.data());
    CHECK(st.isOk(), "batch of %zu: %s", count, st.message().c_str());
    for (size_t i = 0; i < count; ++i) {
      Result one;
      compact(problems[i], Options(), nullptr, &one);
      CHECK(one.keep == batch[i].keep && std::fabs(one.outputError - batch[i].outputError) < 1e-4f,
            "batch of %zu: stream %zu differs from compact()", count, i);
    }
  }
}

// The caller-owned workspace: results do not depend on whether scratch is fresh or reused
// (stale contents from other streams included), its bytes are counted, reuse for the same
// work adds none, and trim frees the idle sets.
void testWorkspace(Rng& rng) {
  kvc::cpu::ThreadPool pool(2);
  std::vector<Stream> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(randomStream(rng, 200 + 100 * i, 32, 160, 24, 1.5));
  std::vector<Problem> problems;
  for (const Stream& st : streams) problems.push_back(st.problem(st.T / 4));
  Workspace ws;
  CHECK(ws.bytes() == 0, "fresh workspace holds %llu bytes", static_cast<unsigned long long>(ws.bytes()));
  for (Method m : {Method::kHighestAttention, Method::kOmp}) {
    Options o;
    o.method = m;
    std::vector<Result> warm(problems.size()), again(problems.size());
    Status st = compactBatch(problems.data(), problems.size(), o, pool, warm.data(), &ws);
    CHECK(st.isOk(), "workspace batch: %s", st.message().c_str());
    CHECK(ws.bytes() > 0, "workspace holds nothing after a batch");
    compactBatch(problems.data(), problems.size(), o, pool, again.data(), &ws);
    // One thread: one set serves the streams in order, so the same work needs no new bytes
    // (with more threads, which set meets the largest stream depends on the schedule).
    std::vector<Result> serial(problems.size());
    kvc::cpu::ThreadPool one(1);
    compactBatch(problems.data(), problems.size(), o, one, serial.data(), &ws);
    const uint64_t held = ws.bytes();
    compactBatch(problems.data(), problems.size(), o, one, serial.data(), &ws);
    CHECK(ws.bytes() == held, "the same serial batch changed the workspace from %llu to %llu bytes",
          static_cast<unsigned long long>(held), static_cast<unsigned long long>(ws.bytes()));
    for (size_t i = 0; i < problems.size(); ++i) {
      Result fresh;
      compact(problems[i], o, nullptr, &fresh);  // a workspace of its own, freed on return
      for (const Result* r : {&warm[i], &again[i]}) {
        CHECK(r->keep == fresh.keep && r->beta == fresh.beta && r->values == fresh.values &&
                  r->outputError == fresh.outputError,
              "stream %zu: a reused workspace changed the result", i);
      }
    }
  }
  ws.trim();
  CHECK(ws.bytes() == 0, "trimmed workspace holds %llu bytes", static_cast<unsigned long long>(ws.bytes()));
}

void testBadInput(Rng& rng) {
  Stream s = randomStream(rng, 50, 16, 20, 0, 1.0);
  Result r;
  Problem p = s.problem(10);
  p.keys = nullptr;
  Status st = compact(p, Options(), nullptr, &r);
  CHECK(st.code() == kvc::StatusCode::kInvalidArgument && st.message().find("keys") != std::string::npos,
        "null keys: %s", st.message().c_str());
  CHECK(r.status.code() == kvc::StatusCode::kInvalidArgument, "result status not set");
  p = s.problem(0);
  CHECK(compact(p, Options(), nullptr, &r).code() == kvc::StatusCode::kInvalidArgument, "target 0 accepted");
  s.keys[7] = kNaN;
  st = compact(s.problem(10), Options(), nullptr, &r);
  CHECK(st.code() == kvc::StatusCode::kInvalidArgument && st.message().find("keys[7]") != std::string::npos,
        "NaN key: %s", st.message().c_str());
  s.keys[7] = 0.5f;
  s.prot.assign(s.T, 0);
  s.prot[4] = 1;
  const int32_t keep[3] = {1, 2, 3};
  st = fitKeepSet(s.problem(3), keep, 3, Options(), nullptr, &r);
  CHECK(st.code() == kvc::StatusCode::kInvalidArgument && st.message().find("protected row 4") != std::string::npos,
        "keep without a protected row: %s", st.message().c_str());
  const int32_t unsorted[3] = {4, 2, 9};
  st = fitKeepSet(s.problem(3), unsorted, 3, Options(), nullptr, &r);
  CHECK(st.code() == kvc::StatusCode::kInvalidArgument, "unsorted keep accepted");
  // Extreme logits (keys ×1000): a valid result or a status, never NaN in the output.
  Stream big = randomStream(rng, 200, 16, 64, 0, 1.0);
  for (float& x : big.keys) x *= 1000.0f;
  st = compact(big.problem(20), Options(), nullptr, &r);
  bool finite = true;
  for (float v : r.values) finite &= std::isfinite(v);
  for (float v : r.beta) finite &= std::isfinite(v);
  CHECK(!st.isOk() || finite, "extreme logits: non-finite output with status ok");
}

// ---- quality on synthetic LLM-like streams ---------------------------------------------------

// Accumulated attention mass per row over the reference queries (the eviction baseline's score).
std::vector<float> attentionMass(const SyntheticStream& s) {
  std::vector<double> mass(s.T, 0.0);
  std::vector<float> logits(s.T);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.D));
  for (uint32_t i = 0; i < s.n; ++i) {
    const float* q = s.queries.data() + static_cast<size_t>(i) * s.D;
    float m = -1e30f;
    for (uint32_t j = 0; j < s.T; ++j) {
      const float* k = s.keys.data() + static_cast<size_t>(j) * s.D;
      float d = 0.0f;
      for (uint32_t c = 0; c < s.D; ++c) d += q[c] * k[c];
      logits[j] = d * scale;
      m = std::max(m, logits[j]);
    }
    double z = 0.0;
    for (uint32_t j = 0; j < s.T; ++j) z += std::exp(static_cast<double>(logits[j]) - m);
    for (uint32_t j = 0; j < s.T; ++j) mass[j] += std::exp(static_cast<double>(logits[j]) - m) / z;
  }
  return std::vector<float>(mass.begin(), mass.end());
}

void testQuality() {
  const SyntheticStream s = makeSyntheticStream(7, 4096, 128, 2048, 512);
  Problem p;
  p.keys = s.keys.data();
  p.values = s.values.data();
  p.T = s.T;
  p.D = s.D;
  p.queries = s.queries.data();
  p.n = s.n;
  p.heldOutQueries = s.heldOut.data();
  p.nHeldOut = s.nHeldOut;
  const std::vector<float> mass = attentionMass(s);
  std::printf("quality: synthetic stream T=%u D=%u n=%u held-out=%u (held-out attention-output error; mass error)\n",
              s.T, s.D, s.n, s.nHeldOut);
  std::printf("  ratio  highest-attention      omp                    eviction (mass top-k)\n");
  // Bounds set just above what was measured (bench/compaction.bench.md).
  const double ratios[5] = {0.5, 0.25, 0.1, 0.05, 0.02};
  const float boundHa[5] = {0.035f, 0.06f, 0.13f, 0.26f, 0.50f};
  const float boundOmp[5] = {0.17f, 0.05f, 0.12f, 0.21f, 0.36f};
  for (int i = 0; i < 5; ++i) {
    p.target = static_cast<uint32_t>(std::lround(ratios[i] * s.T));
    Result ha, omp, ev;
    Options o;
    compact(p, o, nullptr, &ha);
    o.method = Method::kOmp;
    compact(p, o, nullptr, &omp);
    std::vector<int32_t> keep(p.target), scratch(s.T);
    ck::selectTopK(mass.data(), s.T, nullptr, p.target, keep.data(), scratch.data());
    Options e;
    e.fitBeta = false;
    e.fitValues = false;
    fitKeepSet(p, keep.data(), p.target, e, nullptr, &ev);
    CHECK(ha.status.isOk() && omp.status.isOk() && ev.status.isOk(), "quality ratio %.2f: %s / %s / %s", ratios[i],
          ha.status.message().c_str(), omp.status.message().c_str(), ev.status.message().c_str());
    std::printf("  %5.2f  %.4f; %.4f (%4.0f ms)  %.4f; %.4f (%4.0f ms)  %.4f; %.4f\n", ratios[i], ha.heldOutOutputError,
                ha.heldOutMassError,
                1e3 * (ha.secondsScores + ha.secondsSelect + ha.secondsNnls + ha.secondsValues), omp.heldOutOutputError,
                omp.heldOutMassError,
                1e3 * (omp.secondsScores + omp.secondsSelect + omp.secondsNnls + omp.secondsValues),
                ev.heldOutOutputError, ev.heldOutMassError);
    CHECK(ha.heldOutOutputError < boundHa[i], "highest-attention ratio %.2f: held-out error %.4f above %.3f", ratios[i],
          ha.heldOutOutputError, boundHa[i]);
    CHECK(omp.heldOutOutputError < boundOmp[i], "omp ratio %.2f: held-out error %.4f above %.3f", ratios[i],
          omp.heldOutOutputError, boundOmp[i]);
    if (ratios[i] == 0.1) {
      CHECK(3.0f * ha.heldOutOutputError <= ev.heldOutOutputError,
            "ratio 0.1: highest-attention %.4f not 3x better than eviction %.4f", ha.heldOutOutputError,
            ev.heldOutOutputError);
      CHECK(3.0f * omp.heldOutOutputError <= ev.heldOutOutputError, "ratio 0.1: omp %.4f not 3x better than eviction %.4f",
            omp.heldOutOutputError, ev.heldOutOutputError);
    }
  }
}

}  // namespace

// The thread pool every parallel kernel runs on (cpu/thread_pool.h): back-to-back jobs of
// 1..9 tasks on pools of 2 and 3 participants; every task runs exactly once, on a valid
// participant, and run() returns only after all of them (a worker that wakes late for a job
// the caller already finished must not run a task of the next one). Built with the
// sanitizers too (scripts/sanitize.sh).
void testThreadPool(bool quick) {
  for (uint32_t threads : {2u, 3u}) {
    kvc::cpu::ThreadPool pool(threads);
    CHECK(pool.status().isOk(), "thread pool of %u: %s", threads, pool.status().message().c_str());
    int bad = 0;
    const int jobs = quick ? 20000 : 100000;
    for (int job = 0; job < jobs; ++job) {
      const uint32_t tasks = 1 + static_cast<uint32_t>(job * 7919u) % 9;
      std::vector<int> runs(tasks, 0);
      std::vector<uint32_t> by(tasks, 0);
      pool.run(tasks, [&](uint32_t t, uint32_t participant) {
        runs[t] += 1;
        by[t] = participant;
      });
      for (uint32_t t = 0; t < tasks; ++t) bad += runs[t] != 1 || by[t] >= threads;
    }
    CHECK(bad == 0, "thread pool of %u: %d tasks ran other than once, or on a bad participant", threads, bad);
  }
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  if (argc > 1 && std::strcmp(argv[1], "--quality") == 0) {
    testQuality();
    std::printf("kvc_compaction_tests: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
  }
  Rng rng(12345);
  for (const char* isa : {"portable", "avx2", "avx512"}) {
    const ck::CompactionKernels* k = ck::compactionKernelsFor(isa);
    if (!k) {
      std::printf("kernels [%s]: not available on this CPU, skipped\n", isa);
      continue;
    }
    const int before = failures;
    testGemm(*k, rng);
    testSoftmaxAndStats(*k, rng);
    testCholesky(*k, rng);
    testNnls(*k, rng);
    std::printf("kernels [%s]: %s\n", isa, failures == before ? "ok" : "FAILED");
  }
  testTopKAndPool(rng);
  testThreadPool(quick);
  std::printf("core: using kernels [%s]\n", ck::compactionKernels().name);
  testExactness(rng);
  testValueWidth(rng);
  testReferenceErrors(rng);
  testDuplicateRowsMerge(rng);
  testProtectedAndSelection(rng);
  testThreadsChunksBatch(rng);
  testWorkspace(rng);
  testBadInput(rng);
  if (!quick) testQuality();
  std::printf("kvc_compaction_tests: %d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
