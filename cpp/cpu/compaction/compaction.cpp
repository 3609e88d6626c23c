// See compaction.h: argument checks, chunking, merging the chunks' per-query statistics into
// the stream's diagnostics, and batching streams over the thread pool.
#include "compaction.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <utility>

#include "kernels.h"
#include "../thread_pool.h"
#include "attention_pass.h"
#include "chunk_compactor.h"
#include "workspace.h"

namespace kvc::compaction {

using cpu::compaction::CompactionKernels;

namespace {

constexpr uint32_t kMaxHeadDim = 1024;

// acc ⊕= s: the log-sum-exp merge of two partial softmaxes over disjoint rows.
void mergeStats(QueryStats* acc, QueryStats&& s, uint32_t D) {
  if (acc->m.empty()) {
    *acc = std::move(s);
    return;
  }
  const size_t nq = acc->m.size();
  for (size_t i = 0; i < nq; ++i) {
    const float za = acc->z[i], zb = s.z[i];
    if (!(zb > 0.0f)) continue;
    float* y = acc->y.data() + i * D;
    const float* yb = s.y.data() + i * D;
    if (!(za > 0.0f)) {
      std::copy(yb, yb + D, y);
      acc->m[i] = s.m[i];
      acc->z[i] = zb;
      continue;
    }
    const float m = std::max(acc->m[i], s.m[i]);
    const double wa = za * std::exp(static_cast<double>(acc->m[i]) - m), wb = zb * std::exp(static_cast<double>(s.m[i]) - m);
    const double inv = 1.0 / (wa + wb);
    for (uint32_t d = 0; d < D; ++d) y[d] = static_cast<float>((wa * y[d] + wb * yb[d]) * inv);
    acc->m[i] = m;
    acc->z[i] = static_cast<float>(wa + wb);
  }
}

void errors(const QueryStats& ref, const QueryStats& got, uint32_t D, float* outputError, float* massError) {
  const size_t nq = ref.m.size();
  if (nq == 0) {
    *outputError = *massError = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  double num = 0.0, den = 0.0, mass = 0.0;
  for (size_t i = 0; i < nq * D; ++i) {
    const double d = static_cast<double>(got.y[i]) - ref.y[i];
    num += d * d;
    den += static_cast<double>(ref.y[i]) * ref.y[i];
  }
  for (size_t i = 0; i < nq; ++i) {
    const double lse = ref.m[i] + std::log(static_cast<double>(ref.z[i]));
    const double lseC = got.m[i] + std::log(static_cast<double>(got.z[i]));
    const double ratio = std::exp(lseC - lse);
    mass += std::isfinite(ratio) ? std::fabs(ratio - 1.0) : 1.0;
  }
  *outputError = static_cast<float>(den > 0.0 ? std::sqrt(num / den) : std::sqrt(num));
  *massError = static_cast<float>(mass / nq);
}

Status checkFinite(const float* x, size_t count, const char* name) {
  // Blocks of 1024 values scanned branch-free on their exponent bits (the compiler vectorizes
  // this); only a block that holds an inf or NaN is searched for its index.
  constexpr size_t kBlock = 1024;
  size_t bad = count;
  for (size_t b0 = 0; b0 < count && bad == count; b0 += kBlock) {
    const size_t b1 = std::min(count, b0 + kBlock);
    uint32_t any = 0;
    for (size_t i = b0; i < b1; ++i) {
      uint32_t bits;
      std::memcpy(&bits, x + i, 4);
      any |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (any) bad = b0;
  }
  for (size_t i = bad; i < count; ++i)
    if (!std::isfinite(x[i])) return invalidArgument(std::string("compaction: ") + name + "[" + std::to_string(i) + "] is not finite");
  return Status::ok();
}

Status run(const Problem& p, const Options& o, cpu::ThreadPool* pool, const int32_t* fixedKeep, uint32_t fixedCount,
           Result* r) {
  KVC_RETURN_IF_ERROR(validate(p, o));
  KVC_RETURN_IF_ERROR(checkFinite(p.keys, static_cast<size_t>(p.T) * p.D, "keys"));
  KVC_RETURN_IF_ERROR(checkFinite(p.values, static_cast<size_t>(p.T) * p.valueDim(), "values"));
  KVC_RETURN_IF_ERROR(checkFinite(p.queries, static_cast<size_t>(p.n) * p.D, "queries"));
  if (p.bias) KVC_RETURN_IF_ERROR(checkFinite(p.bias, p.T, "bias"));
  if (p.heldOutQueries) KVC_RETURN_IF_ERROR(checkFinite(p.heldOutQueries, static_cast<size_t>(p.nHeldOut) * p.D, "heldOutQueries"));
  if (fixedKeep) {
    for (uint32_t c = 0; c < fixedCount; ++c) {
      if (fixedKeep[c] < 0 || static_cast<uint32_t>(fixedKeep[c]) >= p.T || (c > 0 && fixedKeep[c] <= fixedKeep[c - 1]))
        return invalidArgument("compaction: keep[" + std::to_string(c) + "] = " + std::to_string(fixedKeep[c]) +
                               " is not an ascending, unique row index below T = " + std::to_string(p.T));
    }
    if (fixedCount == 0) return invalidArgument("compaction: keep must not be empty");
    if (p.protectedRows) {
      uint32_t c = 0;
      for (uint32_t j = 0; j < p.T; ++j) {
        while (c < fixedCount && static_cast<uint32_t>(fixedKeep[c]) < j) ++c;
        if (p.protectedRows[j] && (c == fixedCount || static_cast<uint32_t>(fixedKeep[c]) != j))
          return invalidArgument("compaction: keep must contain protected row " + std::to_string(j));
      }
    }
  }

  const CompactionKernels& k = cpu::compaction::compactionKernels();
  Parallel par(pool);
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.D));
  const size_t nq = static_cast<size_t>(p.n) * p.D, nh = static_cast<size_t>(p.nHeldOut) * p.D;
  float* q = scratch<float>(Scratch::kQueries, nq);
  float* qh = scratch<float>(Scratch::kHeldOut, nh);
  for (size_t i = 0; i < nq; ++i) q[i] = p.queries[i] * scale;
  if (p.heldOutQueries)
    for (size_t i = 0; i < nh; ++i) qh[i] = p.heldOutQueries[i] * scale;
  float* packedQ = scratch<float>(Scratch::kPackedQueries, cpu::compaction::packedSize(p.D, p.n, k.nr));
  k.packTransposed(q, p.D, p.n, p.D, packedQ);

  *r = Result();
  const uint32_t chunk = fixedKeep || o.chunkSize == 0 ? p.T : std::min(o.chunkSize, p.T);
  const uint32_t chunks = (p.T + chunk - 1) / chunk;
  QueryStats original, compacted, heldOriginal, heldCompacted;
  size_t keepBegin = 0;  // first fixedKeep entry of the current chunk (one chunk when fixed)
  std::vector<int32_t> localKeep;
  for (uint32_t c = 0; c < chunks; ++c) {
    ChunkInput in;
    in.problem = &p;
    in.rowBegin = c * chunk;
    in.rowEnd = std::min(p.T, in.rowBegin + chunk);
    // Cumulative rounding: chunk c keeps round(target·end/T) − round(target·begin/T) rows,
    // so the shares add up to exactly target.
    auto share = [&](uint32_t row) {
      return static_cast<uint32_t>((static_cast<uint64_t>(p.target) * row + p.T / 2) / p.T);
    };
    in.target = std::max<uint32_t>(1, share(in.rowEnd) - share(in.rowBegin));
    in.scaledQueries = q;
    in.packedQueries = packedQ;
    in.scaledHeldOut = p.heldOutQueries ? qh : nullptr;
    if (fixedKeep) {
      localKeep.assign(fixedKeep + keepBegin, fixedKeep + fixedCount);
      in.fixedKeep = localKeep.data();
      in.fixedKeepCount = fixedCount;
    }
    ChunkOutput out;
    KVC_RETURN_IF_ERROR(compactChunk(k, par, in, o, &out));
    r->keep.insert(r->keep.end(), out.keep.begin(), out.keep.end());
    r->beta.insert(r->beta.end(), out.beta.begin(), out.beta.end());
    r->values.insert(r->values.end(), out.values.begin(), out.values.end());
    r->ridgeRaises += out.ridgeRaises;
    r->secondsScores += out.secondsScores;
    r->secondsSelect += out.secondsSelect;
    r->secondsNnls += out.secondsNnls;
    r->secondsValues += out.secondsValues;
    mergeStats(&original, std::move(out.original), p.valueDim());
    mergeStats(&compacted, std::move(out.compacted), p.valueDim());
    if (p.heldOutQueries && p.nHeldOut > 0) {
      mergeStats(&heldOriginal, std::move(out.heldOutOriginal), p.valueDim());
      mergeStats(&heldCompacted, std::move(out.heldOutCompacted), p.valueDim());
    }
    r->secondsDiagnostics += out.secondsDiagnostics;
  }
  errors(original, compacted, p.valueDim(), &r->outputError, &r->massError);
  errors(heldOriginal, heldCompacted, p.valueDim(), &r->heldOutOutputError, &r->heldOutMassError);
  return Status::ok();
}

Status guarded(const Problem& p, const Options& o, cpu::ThreadPool* pool, const int32_t* keep, uint32_t count,
               Result* r, Workspace* workspace) {
  Status s;
  try {
    std::unique_ptr<Workspace> own;
    if (!workspace) {
      own = std::make_unique<Workspace>();
      workspace = own.get();
    }
    ScratchLease lease(*workspace);
    try {
      s = run(p, o, pool, keep, count, r);
    } catch (const std::bad_alloc&) {
      s = outOfMemory("compaction: out of memory for a stream of T = " + std::to_string(p.T) + ", n = " +
                      std::to_string(p.n) + ", D = " + std::to_string(p.D));
    }
    // Keep the scratch for the next stream unless one stream made it huge.
    trimScratch(size_t(64) << 20);
  } catch (const std::bad_alloc&) {
    s = outOfMemory("compaction: out of memory");
  } catch (...) {
    s = internalError("compaction: unexpected exception");
  }
  if (!s.isOk()) {
    r->keep.clear();
    r->beta.clear();
    r->values.clear();
  }
  r->status = s;
  return s;
}

}  // namespace

Status validate(const Problem& p, const Options& o) {
  if (!p.keys) return invalidArgument("compaction: keys must be a [T, D] array, got null");
  if (!p.values) return invalidArgument("compaction: values must be a [T, D] array, got null");
  if (!p.queries) return invalidArgument("compaction: queries must be an [n, D] array, got null");
  if (p.T == 0) return invalidArgument("compaction: T must be >= 1");
  if (p.T > static_cast<uint32_t>(std::numeric_limits<int32_t>::max()))
    return invalidArgument("compaction: T must be below 2^31, got " + std::to_string(p.T));
  if (p.D == 0 || p.D > kMaxHeadDim)
    return invalidArgument("compaction: D must be in [1, " + std::to_string(kMaxHeadDim) + "], got " + std::to_string(p.D));
  if (p.DV > kMaxHeadDim)
    return invalidArgument("compaction: DV must be in [0, " + std::to_string(kMaxHeadDim) + "], got " + std::to_string(p.DV));
  if (p.n == 0) return invalidArgument("compaction: n (reference queries) must be >= 1");
  if (p.nHeldOut > 0 && !p.heldOutQueries)
    return invalidArgument("compaction: heldOutQueries must be a [nHeldOut, D] array when nHeldOut > 0");
  if (p.target == 0) return invalidArgument("compaction: target must be >= 1");
  if (!(o.ridge >= 0.0f) || !std::isfinite(o.ridge)) return invalidArgument("compaction: ridge must be finite and >= 0");
  if (!(o.minWeight > 0.0f) || !(o.maxWeight >= o.minWeight) || !std::isfinite(o.maxWeight))
    return invalidArgument("compaction: need 0 < minWeight <= maxWeight < inf");
  return Status::ok();
}

Status compact(const Problem& problem, const Options& options, cpu::ThreadPool* pool, Result* result,
               Workspace* workspace) {
  return guarded(problem, options, pool, nullptr, 0, result, workspace);
}

Status fitKeepSet(const Problem& problem, const int32_t* keep, uint32_t keepCount, const Options& options,
                  cpu::ThreadPool* pool, Result* result, Workspace* workspace) {
  if (!keep) {
    result->status = invalidArgument("compaction: keep must be an array of row indices, got null");
    return result->status;
  }
  return guarded(problem, options, pool, keep, keepCount, result, workspace);
}

Status compactBatch(const Problem* problems, size_t count, const Options& options, cpu::ThreadPool& pool,
                    Result* results, Workspace* workspace) {
  if (count == 0) return Status::ok();
  std::unique_ptr<Workspace> own;
  if (!workspace) {
    own = std::make_unique<Workspace>();  // shared by the batch's streams
    workspace = own.get();
  }
  if (count >= pool.size() && pool.size() > 1 && count <= std::numeric_limits<uint32_t>::max()) {
    pool.run(static_cast<uint32_t>(count),
             [&](uint32_t i, uint32_t) { compact(problems[i], options, nullptr, &results[i], workspace); });
  } else {
    for (size_t i = 0; i < count; ++i) compact(problems[i], options, &pool, &results[i], workspace);
  }
  for (size_t i = 0; i < count; ++i)
    if (!results[i].status.isOk())
      return Status(results[i].status.code(), "stream " + std::to_string(i) + ": " + results[i].status.message());
  return Status::ok();
}

}  // namespace kvc::compaction
