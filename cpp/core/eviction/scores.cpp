// See scores.h.
#include "scores.h"

#include <algorithm>
#include <string>

#include "../cache.h"
#include "../tiers/tier_stage.h"

namespace kvc {

namespace {

std::string where(uint32_t layer, uint32_t head) {
  return "layer " + std::to_string(layer) + " kv head " + std::to_string(head);
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

// Checks that need no key data (so that a whole sequence fails before any work).
Status precheck(const Cache& cache, const Stream& s, uint32_t layer, uint32_t head, const PolicySpec& p,
                uint64_t givenOffset) {
  const CacheConfig& c = cache.config();
  if (s.length == 0) return Status::ok();
  uint32_t u;
  // Query-key scores would need RoPE applied by position; not implemented for pre-RoPE keys.
  if (c.ropeDims != 0 && (p.source == ScoreSource::kObservation || p.source == ScoreSource::kLastQuery)) {
    return unsupported("snapKV and tova score rows by recorded queries, which a cache with rope (pre-RoPE keys) does not "
                       "support yet; h2o (accumulated scores), keyNorm, the recency policies and custom scores do");
  }
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

// The score input of one stream once precheck passed: row-free scores are computed (or
// pointed at) here; key-based ones become a backend input with the newest recorded queries.
void streamInput(const CacheConfig& c, const Stream& s, uint32_t streamIndex, const PolicySpec& p, uint64_t givenOffset,
                 std::vector<float>* host, std::vector<float>* queries, RowScoreInput* in) {
  const uint32_t n = static_cast<uint32_t>(s.length);
  *in = RowScoreInput();
  in->stream = StreamView{s.blocks.data(), s.length};
  in->kind = RowScoreKind::kGiven;
  if (n == 0) {
    host->clear();
    in->given = host->data();
    return;
  }
  switch (p.source) {
    case ScoreSource::kRecency:
      host->resize(n);
      for (uint32_t r = 0; r < n; ++r) (*host)[r] = static_cast<float>(r);
      in->given = host->data();
      return;
    case ScoreSource::kAccumulated:
      in->given = s.scores.data();
      return;
    case ScoreSource::kRandom:
      host->resize(n);
      for (uint32_t r = 0; r < n; ++r) (*host)[r] = randomRowScore(p.seed, streamIndex, r);
      in->given = host->data();
      return;
    case ScoreSource::kGiven:
      in->given = p.given + givenOffset;
      return;
    case ScoreSource::kKeyNorm:
      in->kind = RowScoreKind::kKeyNorm;
      return;
    case ScoreSource::kLastQuery:
    case ScoreSource::kObservation: {
      // The u newest recorded query vectors, oldest first (the ring buffer unrolled).
      const bool observation = p.source == ScoreSource::kObservation;
      const uint32_t D = c.storedDim();  // a low-rank stream logs projected queries
      const uint64_t available = std::min<uint64_t>(s.queries.recentSeen, c.recentQueries);
      const uint32_t u = static_cast<uint32_t>(
          std::min<uint64_t>(available, static_cast<uint64_t>(observation ? p.window : 1) * c.queriesPerHead()));
      queries->resize(static_cast<size_t>(u) * D);
      const uint64_t seen = s.queries.recentSeen;
      for (uint32_t j = 0; j < u; ++j) {
        const uint64_t slot = (seen - u + j) % c.recentQueries;
        std::copy(s.queries.recent.data() + slot * D, s.queries.recent.data() + (slot + 1) * D,
                  queries->data() + static_cast<size_t>(j) * D);
      }
      in->kind = RowScoreKind::kMeanAttention;
      in->queries = queries->data();
      in->nQueries = u;
      // SnapKV max-pools the observation window apart from the rows before it; TOVA does not pool.
      in->pool = observation ? p.pool : 1;
      in->poolSplit = observation ? n - std::min(n, p.window) : 0;
      return;
    }
  }
}

}  // namespace

Status scoreInputs(const Cache& cache, const Sequence& seq, const PolicySpec& p, ScoreInputs* out) {
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
  out->streams.resize(streams);
  out->host.resize(streams);
  out->queries.resize(streams);
  out->anyKeyBased = false;
  for (uint32_t i = 0; i < streams; ++i) {
    streamInput(c, seq.streams[i], i, p, offsets[i], &out->host[i], &out->queries[i], &out->streams[i]);
    out->anyKeyBased |= out->streams[i].kind != RowScoreKind::kGiven;
  }
  return Status::ok();
}

namespace {

Status scoreStaged(Cache& cache, const Sequence& seq, uint32_t layer, uint32_t head, const PolicySpec& p, uint64_t givenOffset,
                   std::vector<float>* out) {
  const CacheConfig& c = cache.config();
  const Stream& s = seq.stream(layer, c.kvHeads, head);
  KVC_RETURN_IF_ERROR(precheck(cache, s, layer, head, p, givenOffset));
  std::vector<float> host, queries;
  RowScoreInput in;
  streamInput(c, s, layer * c.kvHeads + head, p, givenOffset, &host, &queries, &in);
  const uint32_t n = static_cast<uint32_t>(s.length);
  if (in.kind == RowScoreKind::kGiven) {
    out->assign(in.given, in.given + n);
    return Status::ok();
  }
  out->resize(n);
  float* scores = out->data();
  return cache.mutableBackend().rowScores(cache.pool(), cache.codec(), &in, 1, &scores);
}

}  // namespace

Status scoreStream(Cache& cache, const Sequence& seq, uint32_t layer, uint32_t head, const PolicySpec& p,
                   uint64_t givenOffset, std::vector<float>* out) {
  const CacheConfig& c = cache.config();
  if (c.tiered()) {
    // Scored on a staged copy of this stream (one run of tier 0's format, tiers/tier_stage.h).
    TierStage stage;
    std::vector<uint8_t> only(seq.streams.size(), 0);
    only[layer * c.kvHeads + head] = 1;
    KVC_RETURN_IF_ERROR(stage.build(cache, seq, only));
    return scoreStaged(cache, stage.sequence(), layer, head, p, givenOffset, out);
  }
  return scoreStaged(cache, seq, layer, head, p, givenOffset, out);
}

Status scoreSequence(Cache& cache, const Sequence& seq, const PolicySpec& p, std::vector<std::vector<float>>* out) {
  ScoreInputs inputs;
  KVC_RETURN_IF_ERROR(scoreInputs(cache, seq, p, &inputs));
  const size_t streams = inputs.streams.size();
  out->assign(streams, {});
  std::vector<float*> targets(streams, nullptr);
  for (size_t i = 0; i < streams; ++i) {
    const RowScoreInput& in = inputs.streams[i];
    const size_t n = static_cast<size_t>(in.stream.length);
    if (in.kind == RowScoreKind::kGiven) {
      (*out)[i].assign(in.given, in.given + n);
    } else {
      (*out)[i].resize(n);
      targets[i] = (*out)[i].data();
    }
  }
  if (!inputs.anyKeyBased) return Status::ok();
  // Key-based scores: one backend call for the streams that need keys (each stream's keys
  // are read and scored where they live; only 4 bytes per row come back).
  std::vector<RowScoreInput> keyed;
  std::vector<float*> keyedOut;
  for (size_t i = 0; i < streams; ++i) {
    if (targets[i]) {
      keyed.push_back(inputs.streams[i]);
      keyedOut.push_back(targets[i]);
    }
  }
  return cache.mutableBackend().rowScores(cache.pool(), cache.codec(), keyed.data(), static_cast<uint32_t>(keyed.size()),
                                          keyedOut.data());
}

}  // namespace kvc
