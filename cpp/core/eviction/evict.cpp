// See evict.h.
#include "evict.h"

#include <algorithm>
#include <cmath>

#include "../cache.h"
#include "budget.h"
#include "kvc/row_select.h"
#include "scores.h"
#include "../tiers/tier_stage.h"

namespace kvc {

namespace {

uint32_t protectedCount(uint32_t n, uint32_t sinks, uint32_t recent) {
  const uint32_t s = std::min(sinks, n), rc = std::min(recent, n);
  return std::min(n, s + rc);
}

void rowsOf(const uint8_t* selected, uint32_t n, std::vector<int32_t>* rows) {
  rows->clear();
  for (uint32_t r = 0; r < n; ++r) {
    if (selected[r]) rows->push_back(static_cast<int32_t>(r));
  }
}

// Ada-KV over the heads of layer l, on host scores: each head first gets a guaranteed part of
// its uniform share (protected rows, at least ceil(safeguard * share)), filled with its own
// best rows; the rest of the layer's total goes to the best rows of any head by normalized
// score (score / sum |score| of the head, so heads compete on their share of attention mass).
void selectAdaptive(const CacheConfig& c, uint32_t l, const std::vector<int32_t>& lengths,
                    const std::vector<int64_t>& shares, const std::vector<std::vector<float>>& scores,
                    const PolicySpec& policy, const BudgetSpec& budget, std::vector<std::vector<int32_t>>* keep) {
  const uint32_t H = c.kvHeads;
  std::vector<uint64_t> scratch;
  std::vector<uint64_t> start(H + 1, 0);
  for (uint32_t h = 0; h < H; ++h) start[h + 1] = start[h] + static_cast<uint64_t>(lengths[l * H + h]);
  std::vector<uint8_t> selected(start[H], 0);
  std::vector<float> normalized(start[H]);
  int64_t remaining = 0;
  for (uint32_t h = 0; h < H; ++h) {
    const uint32_t i = l * H + h, n = static_cast<uint32_t>(lengths[i]);
    const int64_t share = shares[i];
    remaining += share;
    const int64_t floorShare = static_cast<int64_t>(std::ceil(budget.safeguard * static_cast<double>(share) - 1e-9));
    const uint32_t guaranteed = static_cast<uint32_t>(
        std::min<int64_t>(share, std::max<int64_t>(floorShare, protectedCount(n, policy.sinks, policy.recent))));
    uint8_t* sel = selected.data() + start[h];
    const uint32_t forced = markProtectedRows(n, guaranteed, policy.sinks, policy.recent, sel);
    selectTopK(scores[i].data(), n, guaranteed - forced, sel, &scratch);
    remaining -= guaranteed;
    double sum = 0;
    for (uint32_t r = 0; r < n; ++r) sum += std::fabs(static_cast<double>(scores[i][r]));
    const double div = std::isfinite(sum) && sum > 0 ? sum : 1.0;
    for (uint32_t r = 0; r < n; ++r) normalized[start[h] + r] = static_cast<float>(scores[i][r] / div);
  }
  selectTopK(normalized.data(), static_cast<uint32_t>(start[H]), static_cast<uint32_t>(remaining), selected.data(), &scratch);
  for (uint32_t h = 0; h < H; ++h) {
    rowsOf(selected.data() + start[h], static_cast<uint32_t>(lengths[l * H + h]), &(*keep)[l * H + h]);
  }
}

}  // namespace

Status evictSequence(Cache& cache, uint64_t id, const PolicySpec& policy, const BudgetSpec& budget, EvictionReport* report) {
  // Low-rank streams still calibrating are fitted first: eviction gathers coefficient rows.
  KVC_RETURN_IF_ERROR(cache.finishCalibration(id));
  Sequence* seq = cache.mutableSequence(id);
  if (!seq) return Status(StatusCode::kDisposed, "the sequence has been freed");
  if (seq->busy) return busy("the sequence is being compacted");
  KVC_RETURN_IF_ERROR(validatePolicy(policy));
  const CacheConfig& c = cache.config();
  KVC_RETURN_IF_ERROR(validateBudget(budget, c.layers));
  const uint32_t H = c.kvHeads, L = c.layers, streams = c.streamsPerSequence();
  // A tiered sequence is scored and selected on its staged copy (one run of tier 0's format
  // per stream, tiers/tier_stage.h), which then takes the gather too.
  const CacheStats before = cache.stats();
  TierStage stage;
  if (c.tiered()) KVC_RETURN_IF_ERROR(stage.build(cache, *seq, {}));
  const Sequence& rows = c.tiered() ? stage.sequence() : *seq;

  std::vector<int32_t> lengths(streams);
  for (uint32_t i = 0; i < streams; ++i) lengths[i] = seq->streams[i].length;
  std::vector<int64_t> shares;
  KVC_RETURN_IF_ERROR(planShares(c, lengths.data(), budget, &shares));
  std::vector<std::vector<int32_t>> keep(streams);
  if (budget.adaptive) {
    // The cross-head planner needs every score on the host (4 bytes per row).
    std::vector<std::vector<float>> scores;
    KVC_RETURN_IF_ERROR(scoreSequence(cache, rows, policy, &scores));
    for (uint32_t l = 0; l < L; ++l) selectAdaptive(c, l, lengths, shares, scores, policy, budget, &keep);
  } else {
    // Per-stream budgets: the backend scores and selects where the rows live.
    ScoreInputs inputs;
    KVC_RETURN_IF_ERROR(scoreInputs(cache, rows, policy, &inputs));
    std::vector<RowSelectInput> select(streams);
    for (uint32_t i = 0; i < streams; ++i) {
      select[i].score = inputs.streams[i];
      select[i].keep = static_cast<uint32_t>(std::min<int64_t>(shares[i], lengths[i]));
      select[i].sinks = policy.sinks;
      select[i].recent = policy.recent;
    }
    KVC_RETURN_IF_ERROR(cache.mutableBackend().selectRows(inputs.pool, inputs.codec, select.data(), streams, keep.data()));
    inputs.rope.reset();  // a rope stage's blocks go back before the gather
  }

  std::vector<KeepSet> sets;
  report->keptPerStream.assign(streams, 0);
  report->rowsBefore = 0;
  report->rowsAfter = 0;
  for (uint32_t i = 0; i < streams; ++i) {
    report->rowsBefore += static_cast<uint64_t>(lengths[i]);
    report->rowsAfter += keep[i].size();
    report->keptPerStream[i] = static_cast<int32_t>(keep[i].size());
    if (keep[i].size() == static_cast<size_t>(lengths[i])) continue;  // nothing to drop
    KeepSet k;
    k.layer = i / H;
    k.head = i % H;
    k.rows = keep[i].data();
    k.count = static_cast<uint32_t>(keep[i].size());
    sets.push_back(k);
  }
  if (!sets.empty() && c.tiered()) {
    KVC_RETURN_IF_ERROR(cache.keepRowsTiered(id, stage, sets.data(), static_cast<uint32_t>(sets.size()), KeepRowsMode::kMove, nullptr));
  } else if (!sets.empty()) {
    KVC_RETURN_IF_ERROR(cache.keepRows(id, sets.data(), static_cast<uint32_t>(sets.size())));
  }
  stage.reset();
  const CacheStats after = cache.stats();
  report->blocksFreed = static_cast<int64_t>(before.blocksUsed) - static_cast<int64_t>(after.blocksUsed);
  report->bytesFreed = report->blocksFreed * static_cast<int64_t>(before.blockBytes);
  return Status::ok();
}

}  // namespace kvc
