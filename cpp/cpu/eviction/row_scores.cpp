// See row_scores.h. The formulas are those of the core's former host scoring, so scores and
// keep sets are bit-identical to it: dot products with eight partial sums, exp in f32, sums
// and means in f64, max-pooling of the f64 means.
#include "row_scores.h"

#include <algorithm>
#include <cmath>
#include <new>
#include <string>

#include "kvc/row_select.h"
#include "../thread_pool.h"

namespace kvc::cpu {

namespace {

float dot(const float* a, const float* b, uint32_t n) {
  // Eight independent partial sums so that the compiler can vectorize without -ffast-math.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (uint32_t j = 0; j < 8; ++j) acc[j] += a[d + j] * b[d + j];
  }
  for (; d < n; ++d) acc[0] += a[d] * b[d];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Per-task buffers (allocated inside the task; a failure becomes that stream's status).
struct Buffers {
  std::vector<float> keys, beta, logits, scores;
  std::vector<double> mean;
  std::vector<uint8_t> selected;
  std::vector<uint64_t> topk;
};

// Mean over the queries of their softmax over all rows.
//   queries [u, D], keys [n, D], beta [n] -> mean [n]
void meanAttention(const float* queries, uint32_t u, const float* keys, const float* beta, uint32_t n, uint32_t D,
                   Buffers* b) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  b->mean.assign(n, 0.0);
  b->logits.resize(n);
  float* logits = b->logits.data();
  for (uint32_t j = 0; j < u; ++j) {
    const float* q = queries + static_cast<size_t>(j) * D;
    float max = -INFINITY;
    for (uint32_t r = 0; r < n; ++r) {
      logits[r] = dot(q, keys + static_cast<size_t>(r) * D, D) * scale + beta[r];
      max = std::max(max, logits[r]);
    }
    double sum = 0;
    for (uint32_t r = 0; r < n; ++r) {
      logits[r] = std::exp(logits[r] - max);
      sum += logits[r];
    }
    const double w = 1.0 / (sum * u);
    for (uint32_t r = 0; r < n; ++r) b->mean[r] += logits[r] * w;
  }
}

// Max-pool of kernel `pool` (odd) over [begin, end) only.
void maxPool(const std::vector<double>& in, uint32_t begin, uint32_t end, uint32_t pool, float* out) {
  const uint32_t half = pool / 2;
  for (uint32_t r = begin; r < end; ++r) {
    const uint32_t lo = r - std::min(half, r - begin);
    const uint32_t hi = std::min(end - 1, r + half);
    double m = in[lo];
    for (uint32_t i = lo + 1; i <= hi; ++i) m = std::max(m, in[i]);
    out[r] = static_cast<float>(m);
  }
}

Status checkInput(const RowScoreInput& s, uint32_t i) {
  const std::string where = "stream " + std::to_string(i) + ": ";
  if (s.stream.length < 0) return invalidArgument(where + "negative length");
  if (s.stream.length > 0 && !s.stream.blockTable && s.kind != RowScoreKind::kGiven)
    return invalidArgument(where + "the block table must not be null");
  switch (s.kind) {
    case RowScoreKind::kGiven:
      if (!s.given && s.stream.length > 0) return invalidArgument(where + "kGiven needs given scores");
      return Status::ok();
    case RowScoreKind::kKeyNorm: return Status::ok();
    case RowScoreKind::kMeanAttention:
      if (s.stream.length > 0 && (!s.queries || s.nQueries == 0))
        return invalidArgument(where + "kMeanAttention needs at least one query");
      return Status::ok();
  }
  return invalidArgument(where + "unknown score kind");
}

// Scores of one stream into out [length].
Status scoreStream(Backend& rows, const PoolView& pool, const RowCodec& codec, const RowScoreInput& s, float* out,
                   Buffers* b) {
  const uint32_t n = static_cast<uint32_t>(s.stream.length), D = codec.headDim;
  if (n == 0) return Status::ok();
  switch (s.kind) {
    case RowScoreKind::kGiven:
      std::copy(s.given, s.given + n, out);
      return Status::ok();
    case RowScoreKind::kKeyNorm: {
      b->keys.resize(static_cast<size_t>(n) * D);
      KVC_RETURN_IF_ERROR(rows.readRows(pool, codec, s.stream, 0, n, b->keys.data(), nullptr, nullptr, nullptr));
      for (uint32_t r = 0; r < n; ++r) {
        const float* k = b->keys.data() + static_cast<size_t>(r) * D;
        double sq = 0;
        for (uint32_t d = 0; d < D; ++d) sq += static_cast<double>(k[d]) * k[d];
        out[r] = static_cast<float>(-std::sqrt(sq));
      }
      return Status::ok();
    }
    case RowScoreKind::kMeanAttention: {
      b->keys.resize(static_cast<size_t>(n) * D);
      b->beta.resize(n);
      KVC_RETURN_IF_ERROR(rows.readRows(pool, codec, s.stream, 0, n, b->keys.data(), nullptr, b->beta.data(), nullptr));
      meanAttention(s.queries, s.nQueries, b->keys.data(), b->beta.data(), n, D, b);
      const uint32_t split = std::min(s.poolSplit, n), kernel = std::max(1u, s.pool);
      maxPool(b->mean, 0, split, kernel, out);
      maxPool(b->mean, split, n, kernel, out);
      return Status::ok();
    }
  }
  return invalidArgument("unknown score kind");
}

// Runs fn(i, buffers) for every stream on the pool; the first failure (by stream) wins.
template <class F>
Status forEachStream(ThreadPool& pool, uint32_t count, F&& fn) {
  std::vector<Status> status(count);
  pool.run(count, [&](uint32_t i, uint32_t) {
    try {
      Buffers b;
      status[i] = fn(i, &b);
    } catch (const std::bad_alloc&) {
      status[i] = outOfMemory("eviction scores: out of host memory");
    } catch (...) {
      status[i] = internalError("eviction scores: unexpected exception");
    }
  });
  for (uint32_t i = 0; i < count; ++i)
    if (!status[i].isOk()) return Status(status[i].code(), "stream " + std::to_string(i) + ": " + status[i].message());
  return Status::ok();
}

}  // namespace

Status rowScores(Backend& rows, ThreadPool& pool, const PoolView& poolView, const RowCodec& codec,
                 const RowScoreInput* streams, uint32_t count, float* const* scores) {
  if (count == 0) return Status::ok();
  if (!streams || !scores) return invalidArgument("rowScores: streams and scores must hold count entries");
  for (uint32_t i = 0; i < count; ++i) {
    KVC_RETURN_IF_ERROR(checkInput(streams[i], i));
    if (!scores[i] && streams[i].stream.length > 0) return invalidArgument("rowScores: scores[" + std::to_string(i) + "] is null");
  }
  return forEachStream(pool, count, [&](uint32_t i, Buffers* b) {
    return scoreStream(rows, poolView, codec, streams[i], scores[i], b);
  });
}

Status selectRows(Backend& rows, ThreadPool& pool, const PoolView& poolView, const RowCodec& codec,
                  const RowSelectInput* streams, uint32_t count, std::vector<int32_t>* keep) {
  if (count == 0) return Status::ok();
  if (!streams || !keep) return invalidArgument("selectRows: streams and keep must hold count entries");
  for (uint32_t i = 0; i < count; ++i) KVC_RETURN_IF_ERROR(checkInput(streams[i].score, i));
  return forEachStream(pool, count, [&](uint32_t i, Buffers* b) -> Status {
    const RowSelectInput& s = streams[i];
    const uint32_t n = static_cast<uint32_t>(s.score.stream.length);
    const float* scores = s.score.given;
    if (s.score.kind != RowScoreKind::kGiven) {
      b->scores.resize(n);
      KVC_RETURN_IF_ERROR(scoreStream(rows, poolView, codec, s.score, b->scores.data(), b));
      scores = b->scores.data();
    }
    selectKeepSet(scores, n, std::min(s.keep, n), s.sinks, s.recent, &keep[i], &b->selected, &b->topk);
    return Status::ok();
  });
}

}  // namespace kvc::cpu
