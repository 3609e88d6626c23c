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

bool queryScored(const PolicySpec& p) { return p.source == ScoreSource::kObservation || p.source == ScoreSource::kLastQuery; }

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
  if (queryScored(p) && c.ropeDims != 0) {
    // Logged queries are rotated at their tokens' positions, which the log keeps with rope.
    const uint64_t logged = std::min<uint64_t>(s.queries.recentSeen, c.recentQueries);
    if (s.queries.recentPositions.size() < logged) {
      return invalidArgument(std::string(p.source == ScoreSource::kObservation ? "snapKV" : "tova") + " on a cache with rope needs " +
                             "the positions of the recorded queries, but " + where(layer, head) + " has none");
    }
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
                 std::vector<float>* host, std::vector<float>* queries, std::vector<int32_t>* positions, RowScoreInput* in) {
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
      // A low-rank stream logs projected queries, except with rope (whole ones, lowrank.cpp).
      const uint32_t D = c.ropeDims != 0 ? c.headDim : c.storedDim();
      const uint64_t available = std::min<uint64_t>(s.queries.recentSeen, c.recentQueries);
      const uint32_t u = static_cast<uint32_t>(
          std::min<uint64_t>(available, static_cast<uint64_t>(observation ? p.window : 1) * c.queriesPerHead()));
      queries->resize(static_cast<size_t>(u) * D);
      positions->resize(c.ropeDims != 0 ? u : 0);
      const uint64_t seen = s.queries.recentSeen;
      for (uint32_t j = 0; j < u; ++j) {
        const uint64_t slot = (seen - u + j) % c.recentQueries;
        std::copy(s.queries.recent.data() + slot * D, s.queries.recent.data() + (slot + 1) * D,
                  queries->data() + static_cast<size_t>(j) * D);
        if (c.ropeDims != 0) (*positions)[j] = s.queries.recentPositions[slot];
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

// SnapKV and TOVA on a cache with rope score what attention computes, softmax over rows of
// rot(q, p_q) . rot(k, p_k) / sqrt(D) + beta: the scored streams are staged with their keys
// rotated (compaction/rope_stage.h; a low-rank key is lifted to headDim first) and each
// logged query (whole, pre-RoPE) is rotated at its token's stored position. With
// rankPositions, rows are rotated at their rank and a query at its token's rank: the number of
// rows stored before its position, the row attention gives that token (its own row, when kept).
// The backend then scores the staged rows as any post-RoPE rows.
Status stageRope(Cache& cache, const Sequence& seq, const PolicySpec& p, ScoreInputs* in) {
  std::vector<uint8_t> mask(seq.streams.size(), 0);
  bool any = false;
  for (size_t i = 0; i < mask.size(); ++i) {
    mask[i] = in->streams[i].kind == RowScoreKind::kMeanAttention && in->streams[i].stream.length > 0;
    any |= mask[i] != 0;
  }
  if (!any) return Status::ok();
  in->rope = std::make_unique<RopeStage>();
  KVC_RETURN_IF_ERROR(in->rope->build(cache, seq, mask, p.rankPositions));
  in->pool = in->rope->pool();
  in->codec = in->rope->codec();
  std::vector<int32_t> ranks;
  for (size_t i = 0; i < mask.size(); ++i) {
    if (!mask[i]) continue;
    const Stream& staged = in->rope->sequence().streams[i];
    RowScoreInput& r = in->streams[i];
    r.stream = StreamView{staged.blocks.data(), staged.length};
    const int32_t* at = in->queryPositions[i].data();
    if (p.rankPositions) {
      // The stage read the stored positions already; a query's rank is its position's place among them.
      const std::vector<int32_t>& stored = in->rope->sortedPositions(i);
      ranks.resize(r.nQueries);
      for (uint32_t j = 0; j < r.nQueries; ++j) {
        ranks[j] = static_cast<int32_t>(std::lower_bound(stored.begin(), stored.end(), at[j]) - stored.begin());
      }
      at = ranks.data();
    }
    in->rope->rotate(in->queries[i].data(), r.nQueries, 1, at);
  }
  return Status::ok();
}

// Inputs of every stream (only < 0) or of stream `only`, whose given scores start at
// p.given + onlyOffset (the others stay empty kGiven inputs).
Status buildInputs(Cache& cache, const Sequence& seq, const PolicySpec& p, int64_t only, uint64_t onlyOffset, ScoreInputs* out) {
  const CacheConfig& c = cache.config();
  const uint32_t streams = c.streamsPerSequence();
  std::vector<uint64_t> offsets(streams + 1, 0);
  for (uint32_t i = 0; i < streams; ++i) offsets[i + 1] = offsets[i] + static_cast<uint64_t>(seq.streams[i].length);
  if (p.source == ScoreSource::kGiven && only < 0 && p.givenCount != offsets[streams]) {
    return invalidArgument("custom scores must hold one score per row of every stream (" + std::to_string(offsets[streams]) +
                           "), got " + std::to_string(p.givenCount));
  }
  for (uint32_t i = 0; i < streams; ++i) {
    if (only >= 0 && i != only) continue;
    KVC_RETURN_IF_ERROR(precheck(cache, seq.streams[i], i / c.kvHeads, i % c.kvHeads, p, only < 0 ? offsets[i] : onlyOffset));
  }
  out->streams.assign(streams, RowScoreInput());
  out->host.resize(streams);
  out->queries.resize(streams);
  out->queryPositions.resize(streams);
  out->anyKeyBased = false;
  out->pool = cache.pool();
  out->codec = cache.codec();
  out->rope.reset();
  for (uint32_t i = 0; i < streams; ++i) {
    if (only >= 0 && i != only) continue;
    streamInput(c, seq.streams[i], i, p, only < 0 ? offsets[i] : onlyOffset, &out->host[i], &out->queries[i], &out->queryPositions[i],
                &out->streams[i]);
    out->anyKeyBased |= out->streams[i].kind != RowScoreKind::kGiven;
  }
  if (c.ropeDims != 0 && queryScored(p)) KVC_RETURN_IF_ERROR(stageRope(cache, seq, p, out));
  return Status::ok();
}

}  // namespace

Status scoreInputs(Cache& cache, const Sequence& seq, const PolicySpec& p, ScoreInputs* out) {
  return buildInputs(cache, seq, p, -1, 0, out);
}

namespace {

Status scoreStaged(Cache& cache, const Sequence& seq, uint32_t layer, uint32_t head, const PolicySpec& p, uint64_t givenOffset,
                   std::vector<float>* out) {
  const CacheConfig& c = cache.config();
  const uint32_t index = layer * c.kvHeads + head;
  ScoreInputs inputs;
  KVC_RETURN_IF_ERROR(buildInputs(cache, seq, p, index, givenOffset, &inputs));
  const RowScoreInput& in = inputs.streams[index];
  const uint32_t n = static_cast<uint32_t>(in.stream.length);
  if (in.kind == RowScoreKind::kGiven) {
    out->assign(in.given, in.given + n);
    return Status::ok();
  }
  out->resize(n);
  float* scores = out->data();
  return cache.mutableBackend().rowScores(inputs.pool, inputs.codec, &in, 1, &scores);
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
  return cache.mutableBackend().rowScores(inputs.pool, inputs.codec, keyed.data(), static_cast<uint32_t>(keyed.size()),
                                          keyedOut.data());
}

}  // namespace kvc
