// See scores.h. Attention-based scores (SnapKV, TOVA) use the recorded queries and the
// dequantized keys in the original (unrotated) space, with beta added to the logits as
// attention does; probabilities are accumulated in double.
#include "scores.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>

namespace kvc {

namespace {

std::string where(uint32_t layer, uint32_t head) {
  return "layer " + std::to_string(layer) + " kv head " + std::to_string(head);
}

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

// Dequantized keys and beta of one stream.
struct StreamRowsF32 {
  std::vector<float> keys;  // [length][headDim]
  std::vector<float> beta;  // [length]
};

Status readKeys(Cache& cache, const Stream& s, bool withBeta, StreamRowsF32* out) {
  const uint32_t D = cache.config().headDim;
  out->keys.resize(static_cast<size_t>(s.length) * D);
  out->beta.resize(withBeta ? s.length : 0);
  if (s.length == 0) return Status::ok();
  StreamView view{s.blocks.data(), s.length};
  return cache.mutableBackend().readRows(cache.pool(), cache.codec(), view, 0, static_cast<uint32_t>(s.length),
                                         out->keys.data(), nullptr, withBeta ? out->beta.data() : nullptr, nullptr);
}

// How many of the newest recorded query vectors a policy uses, or an error when none were recorded.
Status recentQueryCount(const CacheConfig& c, const Stream& s, uint32_t wantTokens, const char* policy, uint32_t layer,
                        uint32_t head, uint32_t* count) {
  const uint64_t available = std::min<uint64_t>(s.queries.recentSeen, c.recentQueries);
  if (available == 0) {
    return invalidArgument(std::string(policy) + " needs recorded queries, but " + where(layer, head) +
                           " has none: run attention with { recordQueries: true } first (and a cache with recentQueries > 0)");
  }
  *count = static_cast<uint32_t>(std::min<uint64_t>(available, static_cast<uint64_t>(wantTokens) * c.queriesPerHead()));
  return Status::ok();
}

// Mean over the `u` newest recorded query vectors of their softmax over all rows.
void meanAttention(const CacheConfig& c, const Stream& s, const StreamRowsF32& rows, uint32_t u, std::vector<double>* mean) {
  const uint32_t D = c.headDim;
  const uint32_t n = static_cast<uint32_t>(s.length);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  mean->assign(n, 0.0);
  std::vector<float> logits(n);
  const uint64_t seen = s.queries.recentSeen;
  for (uint32_t j = 0; j < u; ++j) {
    const uint64_t slot = (seen - u + j) % c.recentQueries;
    const float* q = s.queries.recent.data() + slot * D;
    float max = -INFINITY;
    for (uint32_t r = 0; r < n; ++r) {
      logits[r] = dot(q, rows.keys.data() + static_cast<size_t>(r) * D, D) * scale + rows.beta[r];
      max = std::max(max, logits[r]);
    }
    double sum = 0;
    for (uint32_t r = 0; r < n; ++r) {
      logits[r] = std::exp(logits[r] - max);
      sum += logits[r];
    }
    const double w = 1.0 / (sum * u);
    for (uint32_t r = 0; r < n; ++r) (*mean)[r] += logits[r] * w;
  }
}

// Max-pool of kernel `pool` (odd) over [begin, end) only, so the observation window and the
// rows before it do not bleed into each other.
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

bool needsKeys(ScoreSource s) {
  return s == ScoreSource::kObservation || s == ScoreSource::kLastQuery || s == ScoreSource::kKeyNorm;
}

// Checks that need no key data (so that a whole sequence fails before any work).
Status precheck(Cache& cache, const Stream& s, uint32_t layer, uint32_t head, const PolicySpec& p, uint64_t givenOffset) {
  const CacheConfig& c = cache.config();
  if (s.length == 0) return Status::ok();
  uint32_t u;
  switch (p.source) {
    case ScoreSource::kAccumulated:
      if (s.scores.size() != static_cast<size_t>(s.length)) {
        return invalidArgument("h2o needs accumulated attention mass, but " + where(layer, head) +
                               " has none: run attention with { accumulateScores: true } first");
      }
      return Status::ok();
    case ScoreSource::kObservation: return recentQueryCount(c, s, p.window, "snapKV", layer, head, &u);
    case ScoreSource::kLastQuery: return recentQueryCount(c, s, 1, "tova", layer, head, &u);
    case ScoreSource::kGiven:
      if (!p.given || givenOffset + static_cast<uint64_t>(s.length) > p.givenCount) {
        return invalidArgument("custom scores must hold one score per row of every stream");
      }
      return Status::ok();
    default: return Status::ok();
  }
}

// Computes the scores of one stream once precheck passed and (for key-based sources) the
// rows are read; pure arithmetic, safe to run on several threads for different streams.
void computeScores(const CacheConfig& c, const Stream& s, uint32_t streamIndex, const PolicySpec& p, uint64_t givenOffset,
                   const StreamRowsF32& rows, std::vector<float>* out) {
  const uint32_t n = static_cast<uint32_t>(s.length);
  const uint32_t D = c.headDim;
  out->resize(n);
  float* o = out->data();
  if (n == 0) return;
  switch (p.source) {
    case ScoreSource::kRecency:
      for (uint32_t r = 0; r < n; ++r) o[r] = static_cast<float>(r);
      return;
    case ScoreSource::kAccumulated:
      std::copy(s.scores.begin(), s.scores.end(), o);
      return;
    case ScoreSource::kRandom:
      for (uint32_t r = 0; r < n; ++r) o[r] = randomRowScore(p.seed, streamIndex, r);
      return;
    case ScoreSource::kGiven:
      std::copy(p.given + givenOffset, p.given + givenOffset + n, o);
      return;
    case ScoreSource::kKeyNorm:
      for (uint32_t r = 0; r < n; ++r) {
        const float* k = rows.keys.data() + static_cast<size_t>(r) * D;
        double sq = 0;
        for (uint32_t d = 0; d < D; ++d) sq += static_cast<double>(k[d]) * k[d];
        o[r] = static_cast<float>(-std::sqrt(sq));
      }
      return;
    case ScoreSource::kLastQuery:
    case ScoreSource::kObservation: {
      const bool observation = p.source == ScoreSource::kObservation;
      const uint64_t available = std::min<uint64_t>(s.queries.recentSeen, c.recentQueries);
      const uint32_t u = static_cast<uint32_t>(
          std::min<uint64_t>(available, static_cast<uint64_t>(observation ? p.window : 1) * c.queriesPerHead()));
      std::vector<double> mean;
      meanAttention(c, s, rows, u, &mean);
      if (!observation) {
        for (uint32_t r = 0; r < n; ++r) o[r] = static_cast<float>(mean[r]);
        return;
      }
      const uint32_t prefix = n - std::min(n, p.window);
      maxPool(mean, 0, prefix, p.pool, o);
      maxPool(mean, prefix, n, p.pool, o);
      return;
    }
  }
}

uint32_t workerCount(const CacheConfig& c) {
  const uint32_t hw = std::max(1u, std::thread::hardware_concurrency());
  return c.threads ? std::min(c.threads, hw) : hw;
}

}  // namespace

Status scoreStream(Cache& cache, const Sequence& seq, uint32_t layer, uint32_t head, const PolicySpec& p,
                   uint64_t givenOffset, std::vector<float>* out) {
  const CacheConfig& c = cache.config();
  const Stream& s = seq.stream(layer, c.kvHeads, head);
  KVC_RETURN_IF_ERROR(precheck(cache, s, layer, head, p, givenOffset));
  StreamRowsF32 rows;
  if (needsKeys(p.source)) KVC_RETURN_IF_ERROR(readKeys(cache, s, p.source != ScoreSource::kKeyNorm, &rows));
  computeScores(c, s, layer * c.kvHeads + head, p, givenOffset, rows, out);
  return Status::ok();
}

Status scoreSequence(Cache& cache, const Sequence& seq, const PolicySpec& p, std::vector<std::vector<float>>* out) {
  const CacheConfig& c = cache.config();
  const uint32_t streams = c.streamsPerSequence();
  std::vector<uint64_t> offsets(streams + 1, 0);
  for (uint32_t i = 0; i < streams; ++i) offsets[i + 1] = offsets[i] + static_cast<uint64_t>(seq.streams[i].length);
  if (p.source == ScoreSource::kGiven && p.givenCount != offsets[streams]) {
    return invalidArgument("custom scores must hold one score per row of every stream (" + std::to_string(offsets[streams]) +
                           "), got " + std::to_string(p.givenCount));
  }
  for (uint32_t i = 0; i < streams; ++i) {
    KVC_RETURN_IF_ERROR(precheck(cache, seq.streams[i], i / c.kvHeads, i % c.kvHeads, p, offsets[i]));
  }
  out->assign(streams, {});
  if (!needsKeys(p.source)) {
    StreamRowsF32 none;
    for (uint32_t i = 0; i < streams; ++i) computeScores(c, seq.streams[i], i, p, offsets[i], none, &(*out)[i]);
    return Status::ok();
  }
  // Key-based scores: the backend decodes a batch of streams (one caller thread: a device
  // backend need not be thread-safe), then the arithmetic runs one stream per thread.
  const uint32_t workers = workerCount(c);
  std::vector<StreamRowsF32> rows(workers);
  for (uint32_t first = 0; first < streams; first += workers) {
    const uint32_t batch = std::min(workers, streams - first);
    for (uint32_t j = 0; j < batch; ++j) {
      KVC_RETURN_IF_ERROR(readKeys(cache, seq.streams[first + j], p.source != ScoreSource::kKeyNorm, &rows[j]));
    }
    auto work = [&](uint32_t j) {
      const uint32_t i = first + j;
      computeScores(c, seq.streams[i], i, p, offsets[i], rows[j], &(*out)[i]);
    };
    std::vector<std::thread> threads;
    for (uint32_t j = 1; j < batch; ++j) threads.emplace_back(work, j);
    work(0);
    for (std::thread& t : threads) t.join();
  }
  return Status::ok();
}

}  // namespace kvc
