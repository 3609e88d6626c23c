// Benchmark of Attention Matching compaction on synthetic LLM-like streams (synthetic_stream.h).
//   kvc_compaction_bench perf    [--T 4096] [--n 2048] [--ratio 0.1] [--runs 7]    one stream, 1 thread
//   kvc_compaction_bench batch   [--streams 16] [--T 16384] [--threads 2] [--chunk 0] [--n 2048]
//   kvc_compaction_bench quality [--ridge 1e-6]                                     error table
//   kvc_compaction_bench gemm    [--T 4096] [--reps 20]     the two score products, ratio to peak
// Times are medians; wall time and the process's CPU time are both printed because a shared
// machine inflates the first.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "cpu/compaction/compaction.h"
#include "cpu/compaction/kernels.h"
#include "cpu/compaction/topk.h"
#include "cpu/compaction/workspace.h"
#include "cpu/fma_probe.h"
#include "cpu/thread_pool.h"
#include "synthetic_stream.h"

using namespace kvc::compaction;
using namespace kvc::compaction::testing;

namespace {

double arg(int argc, char** argv, const char* name, double def) {
  for (int i = 2; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atof(argv[i + 1]);
  return def;
}

double cpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Problem problemOf(const SyntheticStream& s, uint32_t target) {
  Problem p;
  p.keys = s.keys.data();
  p.values = s.values.data();
  p.T = s.T;
  p.D = s.D;
  p.queries = s.queries.data();
  p.n = s.n;
  p.heldOutQueries = s.nHeldOut ? s.heldOut.data() : nullptr;
  p.nHeldOut = s.nHeldOut;
  p.target = target;
  return p;
}

int perf(int argc, char** argv) {
  const uint32_t T = static_cast<uint32_t>(arg(argc, argv, "--T", 4096)), n = static_cast<uint32_t>(arg(argc, argv, "--n", 2048));
  const double ratio = arg(argc, argv, "--ratio", 0.1);
  const int runs = static_cast<int>(arg(argc, argv, "--runs", 7));
  const uint32_t D = 128, t = static_cast<uint32_t>(std::lround(ratio * T));
  const SyntheticStream s = makeSyntheticStream(1, T, D, n, 0);
  std::printf("one stream: T=%u n=%u D=%u t=%u, 1 thread, kernels [%s], median of %d runs (ms)\n", T, n, D, t,
              kvc::cpu::compaction::compactionKernels().name, runs);
  std::printf("  %-18s %8s %8s %8s %8s %8s %9s %9s %6s\n", "method", "scores", "select", "nnls", "values", "diag",
              "total", "cpu", "GF/s");
  // FLOPs of the two n×T×D GEMMs, the two t×t×n Gram matrices (lower half), X_Fᵀ Y and the
  // two t³/3 factorizations.
  const double flops = 4.0 * n * T * D + 2.0 * t * t * n / 1.0 + 2.0 * t * n * D + 2.0 * t * t * t / 3.0;
  // One workspace for all runs, as a cache's backend keeps it (warm buffers, no page faults).
  kvc::compaction::Workspace workspace;
  for (Method m : {Method::kHighestAttention, Method::kOmp}) {
    Options o;
    o.method = m;
    std::vector<double> sc, se, nn, va, di, tot, cpu;
    for (int r = 0; r < runs; ++r) {
      Result res;
      const double c0 = cpuSeconds();
      const auto w0 = std::chrono::steady_clock::now();
      compact(problemOf(s, t), o, nullptr, &res, &workspace);
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
      cpu.push_back(cpuSeconds() - c0);
      if (!res.status.isOk()) {
        std::printf("error: %s\n", res.status.message().c_str());
        return 1;
      }
      sc.push_back(res.secondsScores);
      se.push_back(res.secondsSelect);
      nn.push_back(res.secondsNnls);
      va.push_back(res.secondsValues);
      di.push_back(res.secondsDiagnostics);
      tot.push_back(wall - res.secondsDiagnostics);
    }
    std::printf("  %-18s %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f %9.1f %6.0f\n",
                m == Method::kOmp ? "omp" : "highest-attention", 1e3 * median(sc), 1e3 * median(se), 1e3 * median(nn),
                1e3 * median(va), 1e3 * median(di), 1e3 * median(tot), 1e3 * median(cpu), flops / median(tot) / 1e9);
  }
  std::printf("  (total = wall time without diagnostics; cpu = process CPU time including diagnostics)\n");
  return 0;
}

int batch(int argc, char** argv) {
  const uint32_t streams = static_cast<uint32_t>(arg(argc, argv, "--streams", 16));
  const uint32_t T = static_cast<uint32_t>(arg(argc, argv, "--T", 16384)), n = static_cast<uint32_t>(arg(argc, argv, "--n", 2048));
  const uint32_t threads = static_cast<uint32_t>(arg(argc, argv, "--threads", 2));
  const uint32_t chunk = static_cast<uint32_t>(arg(argc, argv, "--chunk", 0));
  const double ratio = arg(argc, argv, "--ratio", 0.1);
  const int method = static_cast<int>(arg(argc, argv, "--omp", 0));
  const uint32_t D = 128, t = static_cast<uint32_t>(std::lround(ratio * T));
  // A few distinct streams, reused round-robin (generation is not what is measured).
  std::vector<SyntheticStream> distinct;
  for (uint32_t i = 0; i < std::min<uint32_t>(streams, 4); ++i) distinct.push_back(makeSyntheticStream(100 + i, T, D, n, 0));
  std::vector<Problem> problems;
  for (uint32_t i = 0; i < streams; ++i) problems.push_back(problemOf(distinct[i % distinct.size()], t));
  Options o;
  o.chunkSize = chunk;
  o.method = method ? Method::kOmp : Method::kHighestAttention;
  kvc::cpu::ThreadPool pool(threads);
  std::vector<Result> results(streams);
  const double c0 = cpuSeconds();
  const auto w0 = std::chrono::steady_clock::now();
  const kvc::Status st = compactBatch(problems.data(), problems.size(), o, pool, results.data());
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
  const double cpu = cpuSeconds() - c0;
  if (!st.isOk()) {
    std::printf("error: %s\n", st.message().c_str());
    return 1;
  }
  double diag = 0.0, err = 0.0, scores = 0.0, select = 0.0, nnls = 0.0, values = 0.0;
  for (const Result& r : results) {
    diag += r.secondsDiagnostics;
    err += r.outputError;
    scores += r.secondsScores;
    select += r.secondsSelect;
    nnls += r.secondsNnls;
    values += r.secondsValues;
  }
  std::printf("batch: %u streams T=%u n=%u D=%u t=%u chunk=%u method=%s threads=%u: wall %.2f s, cpu %.2f s "
              "(diagnostics %.2f s of thread time), %.1f ms/stream wall, mean ref error %.4f\n",
              streams, T, n, D, t, chunk, method ? "omp" : "highest-attention", threads, wall, cpu, diag,
              1e3 * wall / streams, err / streams);
  std::printf("  thread time per stream (ms): scores %.1f, select %.1f, nnls %.1f, values %.1f, diagnostics %.1f\n",
              1e3 * scores / streams, 1e3 * select / streams, 1e3 * nnls / streams, 1e3 * values / streams,
              1e3 * diag / streams);
  // The arithmetic floor of one stream (highest-attention, every chunk fitted, no protected
  // rows): the multiply-adds of the f32 products and of the f64 factorizations and solves at
  // the peak rates measured now (f64: the probe's f32 rate halved, as every vector FMA unit
  // here does half as many f64 lanes).
  {
    const double span = chunk ? chunk : T, chunks = std::ceil(T / span), tc = std::round(t / chunks);
    const double scoresFma = chunks * 2.0 * n * span * D;
    // lt, the value fit's right-hand side and the diagnostics; the two Gram lower triangles.
    const double otherFma = chunks * (3.0 * tc * n * D + 2.0 * (tc * tc / 2.0) * n);
    const double f64Fma = chunks * (2.0 * tc * tc * tc / 3.0 + tc * tc * D);
    kvc::cpu::FmaProbe probe;
    double best = 1e30;
    for (int r = 0; r < 15; ++r) {
      const auto p0 = std::chrono::steady_clock::now();
      probe = kvc::cpu::fmaProbe(1000000);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count());
    }
    const double peak = probe.multiplyAdds / best;
    std::printf("  floor per stream (peak %.1f GFMA/s f32 on one thread): score products %.1f ms, other f32 products "
                "%.1f ms, f64 factorizations and solves %.1f ms, sum %.1f ms; cpu per stream / floor %.2f\n",
                peak / 1e9, 1e3 * scoresFma / peak, 1e3 * otherFma / peak, 2e3 * f64Fma / peak,
                1e3 * (scoresFma + otherFma + 2.0 * f64Fma) / peak,
                cpu / streams / ((scoresFma + otherFma + 2.0 * f64Fma) / peak));
  }
  // A checksum of the fit, to compare two builds' results.
  double sumBeta = 0.0, sumValues = 0.0;
  for (const Result& r : results) {
    for (float b : r.beta) sumBeta += b;
    for (float v : r.values) sumValues += std::fabs(v);
  }
  // And a hash of every bit of the fit (FNV-1a over beta, values and kept rows): equal hashes
  // mean bit-identical results.
  uint64_t hash = 1469598103934665603ull;
  auto mix = [&](const void* p, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i) hash = (hash ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  };
  for (const Result& r : results) {
    mix(r.beta.data(), r.beta.size() * sizeof(float));
    mix(r.values.data(), r.values.size() * sizeof(float));
    mix(r.keep.data(), r.keep.size() * sizeof(r.keep[0]));
  }
  std::printf("  checksum: sum beta %.6e, sum |values| %.6e, ref error %.7f, fit hash %016llx\n", sumBeta, sumValues,
              err / streams, static_cast<unsigned long long>(hash));
  return 0;
}

int quality(int argc, char** argv) {
  const float ridge = static_cast<float>(arg(argc, argv, "--ridge", 1e-4));
  const uint32_t n = static_cast<uint32_t>(arg(argc, argv, "--n", 2048));
  const SyntheticStream s = makeSyntheticStream(7, 4096, 128, n, 512);
  std::printf("quality: T=4096 D=128 n=%u held-out=512 ridge=%g: output error ref / held-out; held-out mass error\n", n, ridge);
  for (double ratio : {0.5, 0.25, 0.1, 0.05, 0.02}) {
    const uint32_t t = static_cast<uint32_t>(std::lround(ratio * s.T));
    std::printf("  %.2f", ratio);
    for (Method m : {Method::kHighestAttention, Method::kOmp}) {
      Options o;
      o.method = m;
      o.ridge = ridge;
      o.massObjective = arg(argc, argv, "--absolute", 0) ? MassObjective::kAbsolute : MassObjective::kRelative;
      o.nnlsIterations = static_cast<uint32_t>(arg(argc, argv, "--sweeps", 30));
      o.ompTolerance = static_cast<float>(arg(argc, argv, "--tol", 1e-3));
      Result r;
      compact(problemOf(s, t), o, nullptr, &r);
      float maxAbs = 0.0f;
      for (float v : r.values) maxAbs = std::max(maxAbs, std::fabs(v));
      std::printf("  | %s %.4f / %.4f; mass %.4f / %.4f (raises %u, max|v| %.1f)", m == Method::kOmp ? "omp" : "ha",
                  r.outputError, r.heldOutOutputError, r.massError, r.heldOutMassError, r.ridgeRaises, maxAbs);
    }
    std::printf("\n");
  }
  return 0;
}

// The two products of the score pass for one block of kQueryBlock (48) queries over a chunk of
// T rows (S = Q Kᵀ, then Y = E V), each the best of `reps` runs, against the peak multiply-add
// rate measured in the same run (best of `reps` probes): fractions of peak, robust to a shared
// machine because both are best-of.
int gemmBench(int argc, char** argv) {
  const uint32_t T = static_cast<uint32_t>(arg(argc, argv, "--T", 4096)), D = 128, M = 48;
  const int reps = static_cast<int>(arg(argc, argv, "--reps", 20));
  const auto& k = kvc::cpu::compaction::compactionKernels();
  const uint32_t ld = T + 16;
  std::vector<float> q(static_cast<size_t>(M) * D), keys(static_cast<size_t>(T) * D), e(static_cast<size_t>(M) * ld),
      y(static_cast<size_t>(M) * D);
  uint32_t seed = 1;
  auto rnd = [&] { seed = seed * 1664525u + 1013904223u; return static_cast<float>(seed >> 8) / 16777216.0f - 0.5f; };
  for (float& x : q) x = rnd();
  for (float& x : keys) x = rnd();
  std::vector<float> pk(kvc::cpu::compaction::packedSize(D, T, k.nr)), pv(kvc::cpu::compaction::packedSize(T, D, k.nr));
  k.packTransposed(keys.data(), D, T, D, pk.data());
  k.packRows(keys.data(), D, T, D, pv.data());
  auto best = [&](auto fn) {
    double b = 1e30;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      b = std::min(b, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return b;
  };
  const double fmas = static_cast<double>(M) * T * D;
  // The probe before and after the products (the better of the two): a run of the machine's
  // other work over one of them does not set the peak.
  kvc::cpu::FmaProbe probe;
  const double p0 = best([&] { probe = kvc::cpu::fmaProbe(1000000); });
  const double s1 = best([&] { k.gemm(M, T, D, q.data(), D, pk.data(), e.data(), ld, false); });
  const double s2 = best([&] { k.gemm(M, D, T, e.data(), ld, pv.data(), y.data(), D, false); });
  const double sp = std::min(p0, best([&] { probe = kvc::cpu::fmaProbe(1000000); }));
  const double peak = probe.multiplyAdds / sp;
  std::printf("gemm (%s, tile %u x %u): peak %.1f GFMA/s; Q K^T [%u x %u x %u] %.1f GFMA/s (%.0f%% of peak); "
              "E V [%u x %u x %u] %.1f GFMA/s (%.0f%%)  [checksum %g]\n",
              k.name, k.mr, k.nr, peak / 1e9, M, T, D, fmas / s1 / 1e9, 100 * fmas / s1 / peak, M, D, T,
              fmas / s2 / 1e9, 100 * fmas / s2 / peak, static_cast<double>(y[7]) + probe.checksum);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "perf";
  if (mode == "perf") return perf(argc, argv);
  if (mode == "batch") return batch(argc, argv);
  if (mode == "quality") return quality(argc, argv);
  if (mode == "gemm") return gemmBench(argc, argv);
  std::printf("usage: kvc_compaction_bench perf|batch|quality|gemm [options]\n");
  return 2;
}
