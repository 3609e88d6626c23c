// Attention Matching over a whole sequence (ARCHITECTURE §4.5, §9): picks the streams, their
// targets, protected rows and reference queries; the backend does the numerics
// (Backend::compactStreams, where the rows live) and hands back keep sets and reports; the
// results are written back with Cache::keepRows + Backend::applyCompactionFit. Three steps so
// that the binding can run the expensive middle one off the main thread:
//   plan     (main thread)  validate, choose streams and targets; nothing changes
//   compute  (any thread)   backend.compactStreams batch by batch; reads the pool, writes nothing
//   apply    (main thread)  gather the kept rows, re-encode the fitted values and beta
// No step throws; each returns a Status.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include <memory>

#include "../cache.h"
#include "../tiers/tier_stage.h"
#include "rope_stage.h"
#include "kvc/compaction_ops.h"

namespace kvc::compaction {

enum class QuerySource : uint32_t {
  kRecorded = 0,  // the stream's query reservoir; the keys when nothing was recorded
  kKeys = 1,      // the stream's own keys (a proxy when no queries are known)
  kGiven = 2,     // per-layer arrays from the caller
};

struct SequenceRequest {
  Options options;                 // fit options (method, ridge, nnlsIterations, chunkSize, ...)
  double ratio = 0.0;              // > 0: target = ceil(ratio × T) (online: |P| + ceil(ratio × (T − |P|)))
  uint32_t targetTokens = 0;       // used when ratio == 0: target per stream (clamped to T)
  uint32_t sinks = 0;              // protected: the first `sinks` rows of every stream
  uint32_t recent = 0;             // protected: the last `recent` rows of every stream
  std::vector<uint32_t> layers;    // empty: every layer
  std::vector<uint32_t> heads;     // empty: every kv head
  QuerySource querySource = QuerySource::kRecorded;
  // kGiven: per layer (size config.layers) an [n, queryHeads, headDim] array or empty (that
  // layer falls back to its recorded queries). Owned copies: compute may run on another thread.
  std::vector<std::vector<float>> queries;
  std::vector<std::vector<float>> heldOut;  // same layout, diagnostics only; may be empty
  // Caches with rope (keys before RoPE): per layer (size config.layers, or empty) the position
  // of each token of queries[layer] / heldOut[layer] ([n] each), or empty: every query of that
  // layer sits at the layer's next position (as the next decoded token would). Recorded
  // queries carry their own (QueryLog). Refused without rope.
  std::vector<std::vector<int32_t>> queryPositions;
  std::vector<std::vector<int32_t>> heldOutPositions;
  uint32_t maxKeyQueries = 1024;   // keys used as queries: a uniform subsample of at most this many
  bool online = false;             // only streams longer than maxRows are compacted
  uint32_t maxRows = 0;
  uint32_t threads = 1;            // compaction threads (the calling thread included)
  // Raised by the caller (an AbortSignal): compute stops between batches with kAborted.
  // Not owned; must outlive computeCompaction.
  const std::atomic<bool>* abort = nullptr;
};

// One compacted stream: what apply writes, and what the report shows.
struct StreamPlan {
  uint32_t layer = 0, head = 0;
  uint32_t rowsBefore = 0;
  uint32_t target = 0;
  uint32_t queryCount = 0;
  QuerySource querySource = QuerySource::kRecorded;
  CompactionStreamReport result;  // keep set, diagnostics, timings
  uint32_t fit = 0, fitIndex = 0;  // SequencePlan::fits[fit] holds the fitted rows as its stream fitIndex
};

struct SequencePlan {
  uint64_t id = 0;
  // Taken by plan on the main thread: compute must not look the id up in the cache's map,
  // which the main thread may change meanwhile (other sequences).
  const Sequence* sequence = nullptr;
  // Tiered caches: the planned streams staged as one run of tier 0's format (tier_stage.h);
  // `sequence` then points at the stage, and apply rebuilds the tiers from it.
  std::unique_ptr<TierStage> stage;
  // Caches with rope: the planned streams as post-RoPE f32 rows (rope_stage.h); `sequence`
  // then points at the stage, compute reads it with the stage's pool view and codec, and
  // apply keeps the real streams' stored rows.
  std::unique_ptr<RopeStage> rope;
  std::vector<StreamPlan> streams;
  std::vector<std::unique_ptr<CompactionFit>> fits;  // one per compactStreams batch, until apply
  double secondsRead = 0;   // reading the rows (backend) and gathering queries
  double secondsApply = 0;  // keepRows + rewriteRows
  uint64_t blocksBefore = 0, blocksAfter = 0;
};

// Main thread. Checks the request against the cache, fills plan->streams (layer, head,
// rowsBefore, target) for the streams that will change; an online request with no stream
// over maxRows yields an empty plan.
Status planCompaction(Cache& cache, uint64_t id, const SequenceRequest& request, SequencePlan* plan);

// Any thread, while the sequence cannot change (busy, or the caller holds the main thread).
// Touches only the plan's sequence, the immutable configuration and backend.compactStreams.
// progress(fraction) after each batch of streams; stops between batches with DISPOSED once
// cache.cancelRequested() (the cache is being disposed), or ABORTED once *request.abort.
Status computeCompaction(Cache& cache, const SequenceRequest& request, SequencePlan* plan,
                         const std::function<void(double)>& progress);

// Main thread. Cache::prepareKeepRows for every planned stream at once, then
// backend.applyCompactionFit re-encodes the rebuilt rows whose value or beta changed, then
// commit: all or nothing, even when a backend call fails (cache.h, "Transactions").
// Protected rows and the kept keys stay bit-exact.
Status applyCompaction(Cache& cache, SequencePlan* plan);

}  // namespace kvc::compaction
