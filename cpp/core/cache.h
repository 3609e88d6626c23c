// The cache: configuration, backend, block pool and the live sequences.
//
// Transactions: every mutating operation (append, copy-on-write after fork, truncate,
// keepRows and so eviction and compaction apply, import) either completes or returns an
// error with the cache exactly as it was: the same sequences, lengths, next positions, block
// tables and reference counts, the same bytes in every visible row (export bytes identical;
// slots beyond a stream's length, which nothing reads, may have been written) and the same
// stats() (rows, blocksUsed, blocksFree). This holds for validation errors, an
// exhausted budget, and for a backend call that fails at any step. The rule that makes it
// true: validate, plan and allocate first; run every backend call that can fail against
// fresh blocks (or rows that are not yet visible); mutate the bookkeeping only after the
// last fallible call succeeded, and otherwise free the fresh blocks. Only committedBytes may
// have grown after a failure (pool memory is committed before it is written and never
// shrinks; it is reused by the next allocation). Not covered: a second backend fault while a
// rollback restores rows (only the in-place fallback of keepRows restores rows; it says so in
// the returned message). attention() is not a mutating operation here: on failure its
// accumulated scores may hold part of the call's mass.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "block_pool.h"
#include "config.h"
#include "kvc/backend.h"
#include "sequence.h"
#include "sparse/sparse_plan.h"
#include "tiers/tier_layout.h"

namespace kvc {

struct AppendInput {
  uint32_t tokens = 0;                 // T
  InputType type = InputType::kF32;
  const void* keys = nullptr;          // [T, kvHeads, headDim]
  const void* values = nullptr;        // [T, kvHeads, headDim]
  const int32_t* positions = nullptr;  // [T] or nullptr for nextPosition, +1, ...
};

struct AttentionRequest {
  uint32_t layer = 0;
  uint32_t tq = 1;
  const float* queries = nullptr;  // [sequences, tq, queryHeads, headDim]
  float* out = nullptr;            // same shape
  float* lse = nullptr;            // [sequences, tq, queryHeads] or nullptr
  bool accumulateScores = false;   // add attention mass per row into Stream::scores
  bool recordQueries = false;      // log the queries into Stream::queries
  int precision = -1;              // -1: the cache's default; 0: exact; 1: fast
  bool rankPositions = false;      // with rope: RoPE by rank in the stream instead of stored positions
  SparseSpec sparse;               // dynamic sparse decode (sparse/sparse_plan.h); tokens 0 = dense
};

// Rows to keep of one stream, ascending and unique.
struct KeepSet {
  uint32_t layer = 0;
  uint32_t head = 0;
  const int32_t* rows = nullptr;
  uint32_t count = 0;
};

class Cache;
class TierStage;
class RopeStage;

// One thread's buffers of the host low-rank attention (lowrank_host.cpp). The cache keeps them
// between calls, like its other attention scratch: they grow (and are zeroed) only when a call
// needs more, so a decode step neither allocates nor faults in fresh pages per thread.
struct LowRankHostScratch {
  std::vector<float> keys, values, beta, logits, projected, rope, basisT, queries, rotated, out, cBuf, sBuf;
  std::vector<int32_t> positions, cutoff;
  std::vector<uint32_t> ropePositions;
  std::vector<double> sums;
  // Bytes held (capacity) by every buffer above, for stats().workspaceBytes.
  uint64_t bytes() const {
    uint64_t n = 0;
    for (const auto* v : {&keys, &values, &beta, &logits, &projected, &rope, &basisT, &queries, &rotated, &out, &cBuf, &sBuf}) {
      n += v->capacity() * sizeof(float);
    }
    n += (positions.capacity() + cutoff.capacity()) * sizeof(int32_t) + ropePositions.capacity() * sizeof(uint32_t);
    return n + sums.capacity() * sizeof(double);
  }
};

// What the caller of prepareKeepRows does with the rebuilt streams before commit.
enum class KeepRowsMode {
  kMove,     // rows only move (eviction): whole blocks that keep their rows are reused, not copied
  kRewrite,  // rows of the rebuilt streams are re-encoded before commit (compaction): every
             // rebuilt block is private to the transaction, so the old rows stay intact
};

// A keepRows that has gathered the kept rows but changed nothing visible yet
// (Cache::prepareKeepRows). stream(i) is the rebuilt stream of sets[i], which the caller may
// rewrite (Backend::rewriteRows, Backend::applyCompactionFit); commit() makes every rebuilt
// stream visible at once and releases the old blocks (it cannot fail); abort() frees the
// fresh blocks and restores any rows rebuilt in place. Destroying a pending transaction
// aborts it. The sequence is busy (no other operation, no free) while a transaction is
// pending; a transaction must end before its cache is destroyed.
class KeepRowsTxn {
 public:
  KeepRowsTxn() = default;
  ~KeepRowsTxn();
  KeepRowsTxn(KeepRowsTxn&& other) noexcept { *this = std::move(other); }
  KeepRowsTxn& operator=(KeepRowsTxn&& other) noexcept;
  KeepRowsTxn(const KeepRowsTxn&) = delete;
  KeepRowsTxn& operator=(const KeepRowsTxn&) = delete;

  bool pending() const { return cache_ != nullptr; }
  uint32_t size() const { return static_cast<uint32_t>(changes_.size()); }
  StreamView stream(uint32_t i) const;
  // After the caller rewrote rows (a new beta): recomputes the key summaries of the rebuilt
  // blocks, whose maxBeta the bounds read (kvc/key_summary.h). A failure aborts the transaction.
  Status refreshSummaries();
  void commit();
  Status abort();
  // Aborts and returns `cause` (with a note when the rollback itself failed).
  Status abortWith(const Status& cause);

 private:
  friend class Cache;
  struct Change {
    Stream* stream = nullptr;
    std::vector<int32_t> blocks;       // the rebuilt block table
    std::vector<uint8_t> reused;       // [blocks] 1: an old block kept as it is (kMove)
    std::vector<int32_t> rows;         // the keep set (scores follow it at commit)
    bool inPlace = false;              // rebuilt in the stream's own blocks (full pool)
    bool saved = false;                // in place: rows [backupStart, rows.size()) are saved
    uint32_t backupStart = 0;          // in place: the first saved row
    uint32_t gatherStart = 0;          // in place: the first row that moves
    std::vector<uint8_t> backupKeys, backupValues;
    std::vector<float> backupBeta;
    std::vector<int32_t> backupPositions;
  };
  Cache* cache_ = nullptr;
  Sequence* sequence_ = nullptr;
  std::vector<Change> changes_;
  std::vector<int32_t> fresh_;  // blocks allocated for the transaction
};

struct RowsOut {
  std::vector<float> keys, values, beta;
  std::vector<int32_t> positions;
};

struct CacheStats {
  uint64_t sequences = 0;
  uint64_t rows = 0;
  uint64_t blocksUsed = 0;
  uint64_t blocksFree = 0;
  uint64_t blockBytes = 0;
  uint64_t committedBytes = 0;
  uint64_t maxBytes = 0;
  uint64_t workspaceBytes = 0;  // scratch kept between calls: the backend's (compaction, eviction) and the host low-rank path's
  uint64_t lowRankBytes = 0;    // bases (each counted once however many forks share it) and calibration rows
  // Precision tiers: per tier, blocks (each counted once however many forks share it) and rows.
  std::vector<uint64_t> tierBlocks, tierRows;
};

class Cache {
 public:
  static Status create(const CacheConfig& config, std::unique_ptr<Backend> backend, std::unique_ptr<Cache>* out);
  ~Cache();

  const CacheConfig& config() const { return config_; }
  const Backend& backend() const { return *backend_; }
  PoolView pool() const { return PoolView{backend_->poolBase(), layout_, backend_->summaryBase()}; }
  RowCodec codec() const;

  uint64_t createSequence();
  Status fork(uint64_t parent, uint64_t* child);
  Status freeSequence(uint64_t id);
  Status append(uint64_t id, uint32_t layer, const AppendInput& input);
  Status attention(const uint64_t* ids, uint32_t count, const AttentionRequest& request);
  Status truncate(uint64_t id, int32_t position);
  // Rebuilds streams from keep sets (eviction, compaction): rows move bit-exactly with their
  // beta, position and score; blocks no longer referenced return to the pool. All or nothing
  // (prepareKeepRows + commit).
  Status keepRows(uint64_t id, const KeepSet* sets, uint32_t count);
  // First phase of keepRows: validates, allocates and gathers the kept rows into blocks that
  // no visible stream reads, and returns the pending transaction (see KeepRowsTxn). Each set
  // names a distinct stream. Fresh blocks are used while the pool has room for them; on a
  // pool too full for that, streams whose blocks are all exclusively owned are rebuilt in
  // place after their overwritten rows were saved to host memory (abort writes them back).
  Status prepareKeepRows(uint64_t id, const KeepSet* sets, uint32_t count, KeepRowsMode mode, KeepRowsTxn* txn);
  Status resetScores(uint64_t id);
  // Background maintenance (replace_prefix.cpp). snapshot: a fork of `id` (copy-on-write, no
  // row copied) that remembers every stream's length; from now on `id` tracks which leading
  // rows stay unchanged. The snapshot may then be evicted or compacted like any sequence
  // (also off the main thread) while `id` keeps appending. replacePrefix: stream by stream,
  // the first snapshotRows rows of `id` are replaced by every row of the snapshot, keeping
  // the rows `id` gained since (bit-exact, with their positions, beta and scores); blocks
  // are shared where the boundaries fall on whole blocks, the rest is copied. All or
  // nothing; ABORTED when `id` changed below the snapshot (truncated, evicted, compacted)
  // or already took a snapshot's rows. The snapshot itself is left as it is.
  Status snapshot(uint64_t id, uint64_t* child);
  Status replacePrefix(uint64_t id, uint64_t snapshotId);
  // Read-only access for policies and compaction (nullptr when freed).
  const Sequence* sequence(uint64_t id) const;
  Sequence* mutableSequence(uint64_t id);
  Backend& mutableBackend() { return *backend_; }
  // Frees the scratch kept between calls (the backend's workspace and the host low-rank
  // path's per-thread buffers) that no running operation uses. Main thread.
  void trimWorkspace();
  Status read(uint64_t id, uint32_t layer, uint32_t head, RowsOut* out);
  Status lengths(uint64_t id, uint32_t layer, int32_t* out) const;
  Status nextPosition(uint64_t id, uint32_t layer, int32_t* out) const;
  Status exportSequence(uint64_t id, std::vector<uint8_t>* out);
  Status importSequence(const uint8_t* bytes, size_t size, uint64_t* id);
  bool hasSequence(uint64_t id) const { return sequences_.count(id) != 0; }

  // ---- low-rank storage (lowrank.cpp) ----
  // Fits the bases of every stream of the sequence that is still calibrating from the rows
  // it holds (eviction, compaction and export run on fitted streams only).
  Status finishCalibration(uint64_t id);
  // Refits the bases of every stream from its rows (lifted to headDim) and re-projects them.
  Status fitBases(uint64_t id);
  // Gives one stream caller-made bases (keys, values: [headDim][rank], orthonormal columns);
  // rows it already holds are lifted with the old bases and projected onto the new ones.
  Status setBases(uint64_t id, uint32_t layer, uint32_t head, const float* keys, const float* values);
  // A copy of a stream's query log in the original space (a low-rank stream with bases logs
  // projected queries: they are lifted back).
  Status queryLog(uint64_t id, uint32_t layer, uint32_t head, QueryLog* out) const;
  // The bases of a stream into keys/values ([headDim][rank]); false when it has none yet.
  Status bases(uint64_t id, uint32_t layer, uint32_t head, std::vector<float>* keys, std::vector<float>* values,
               bool* has) const;
  CacheStats stats() const;
  // ---- precision tiers (tiers/tier_cache.cpp) ----
  const std::vector<TierFormat>& tiers() const { return tiers_; }
  PoolView tierPool(uint32_t tier) const { return PoolView{backend_->poolBase(), tiers_[tier].layout}; }
  RowCodec tierCodec(uint32_t tier) const;
  // A stream's runs of same-format blocks, oldest rows first (one run for an untiered stream).
  void tierRuns(const Stream& s, std::vector<TierRun>* runs) const;
  // Rows of the stream's aged tiers (the rows before its tier-0 run) and their blocks.
  int32_t agedRows(const Stream& s) const;
  uint32_t agedBlocks(const Stream& s) const;
  // Eviction and compaction of tiered sequences (tiers/tier_rebuild.cpp, tier_stage.h).
  // stageStream: `s` as one run of tier 0's format (aged rows re-encoded into fresh blocks,
  // tier 0's blocks shared); releaseStaged gives a staged stream's blocks back.
  Status stageStream(const Stream& s, Stream* out);
  void releaseStaged(Stream* s);
  // keepRows on the staged copy (then `rewrite` on the rebuilt staged streams, e.g. the
  // compaction fit), then every rebuilt stream replaces its stream of `id` as tiers: the
  // lowest tier takes the older rows in whole blocks, requantized once from the staged rows;
  // tier 0 keeps the rest (the kept rows of its old run bit-exact). All or nothing.
  Status keepRowsTiered(uint64_t id, TierStage& stage, const KeepSet* sets, uint32_t count, KeepRowsMode mode,
                        const std::function<Status(const KeepRowsTxn&)>& rewrite);
  // Compaction of a cache with rope (compaction/rope_stage.h): `s` staged in the stage's
  // format (fresh blocks): keys lifted to headDim and rotated at their stored positions,
  // values, beta and positions as stored. `storedPositions` (may be null): the stored
  // positions of `s` in row order, as read for the staging.
  Status stageRopeStream(const Stream& s, const RopeStage& stage, Stream* out, std::vector<int32_t>* storedPositions);
  // Decodes rows [start, start + count) of a stream whatever tiers they are in (readRows).
  Status readStreamRows(const Stream& s, uint32_t start, uint32_t count, float* keys, float* values, float* beta,
                        int32_t* positions) const;
  // The blocks sparse attention would read for these queries ([tq, queryHeads, headDim]) and
  // the logit bounds it picked them by, per kv head of the layer (sparse/sparse_plan.cpp).
  Status sparseSelection(uint64_t id, uint32_t layer, const float* queries, uint32_t tq, const SparseSpec& spec,
                         std::vector<std::vector<uint32_t>>* picked, std::vector<std::vector<float>>* bounds);

  // Work that reads this cache off the main thread (asynchronous compaction) enters before
  // it is queued and leaves when it no longer touches the cache. The destructor (dispose)
  // raises cancelRequested() and waits for every such work to leave, so no thread reads
  // freed pool memory; work checks the flag between batches, which bounds the wait.
  void enterBackground();
  void leaveBackground();
  bool cancelRequested() const { return cancelBackground_.load(std::memory_order_acquire); }
  // Raises cancelRequested() without waiting: dispose() calls it before letting go of a cache
  // that background work still holds, so that work stops at its next batch.
  void requestCancel() { cancelBackground_.store(true, std::memory_order_release); }
  const std::atomic<bool>* cancelFlag() const { return &cancelBackground_; }

 private:
  // importSequence after the magic: the checksum is verified together with the rows
  // (*checksumChecked once it was compared), not in a pass of its own.
  Status importChecked(const uint8_t* bytes, size_t size, uint32_t storedCrc, bool* checksumChecked, uint64_t* id);
  Cache(const CacheConfig& config, std::unique_ptr<Backend> backend, uint64_t capacityBlocks);
  Status find(uint64_t id, Sequence** out);
  Status findConst(uint64_t id, const Sequence** out) const;
  Status checkLayer(uint32_t layer) const;
  // Allocates `count` blocks, committing backend memory first; all or nothing.
  Status allocateBlocks(uint32_t count, std::vector<int32_t>* out);
  void releaseStream(Stream& stream);
  Status readPositions(const Stream& stream, uint32_t start, uint32_t count, int32_t* out) const;
  friend class KeepRowsTxn;
  friend class ChunkImport;  // chunk_import.cpp: takes blocks, writes rows, adds the sequence at the end
  void commitKeep(KeepRowsTxn* txn);
  Status abortKeep(KeepRowsTxn* txn);
  // D: floats per logged query vector (headDim, or the rank of a low-rank stream's log).
  // positions: [tq] stored positions of the query tokens (caches with rope), else nullptr.
  void recordQueries(Stream& stream, uint32_t streamIndex, const float* queries, uint32_t tq, uint64_t tokenStride,
                     uint32_t D, const int32_t* positions);
  Status attentionChunk(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1);
  // Key summaries (sparse/sparse_plan.cpp): recomputes blocks [firstBlock, endBlock) of a
  // stream of `length` rows from their stored keys; a no-op when the layout has none.
  Status refreshSummaries(const int32_t* blocks, int64_t length, uint32_t firstBlock, uint32_t endBlock);
  // Folds `tokens` rows appended at startRows[h] of each table into the summaries.
  Status summarizeAppended(const int32_t* const* tables, const int32_t* startRows, uint32_t streams, uint32_t tokens);
  Status checkSparse(const SparseSpec& spec) const;
  // Precision tiers (tiers/tier_cache.cpp). Ages the whole blocks of the layer's streams that
  // left their tier's window into the next tier (requantized from their stored form); best
  // effort: a failure (a full pool) leaves the rows where they are, still correct.
  void ageStreams(Sequence* seq, uint32_t layer);
  Status exportTiered(const Sequence& seq, std::vector<uint8_t>* out);
  Status importTiered(const uint8_t* bytes, size_t size, uint64_t* id);
  Status attentionChunkTiered(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1);
  // Truncation of a tiered stream to newLength rows: the blocks it keeps and their tiers.
  // Writes n f32 rows (keys, values [n][width of the codec], positions, beta [n]) into the
  // table `table` from its row 0, in the format of pool/codec (backend append).
  Status writeRowsAt(const PoolView& pool, const RowCodec& codec, const int32_t* table, uint32_t n, const float* keys,
                     const float* values, const int32_t* positions, const float* beta);
  // Rows [start, start + count) of `src` (tier `from`) decoded and encoded in tier `to` into
  // the table `dst` from its row 0 (block-aligned chunks, bounded host memory).
  Status recodeRows(uint32_t from, const StreamView& src, uint32_t start, uint32_t count, uint32_t to, const int32_t* dst);
  // replacePrefix's scores: the snapshot's M rows' scores, then the stream's from row P on.
  static void spliceScores(Stream* dst, const Stream& src, int32_t P, int32_t M, int32_t length);
  // replacePrefix of a tiered sequence, after replacePrefix's checks (tiers/tier_splice.cpp).
  Status replacePrefixTiered(Sequence* seq, const Sequence* snap);
  // prepareKeepRows on a sequence that need not be in the map (a TierStage's).
  Status prepareKeepRowsOn(Sequence* seq, const KeepSet* sets, uint32_t count, KeepRowsMode mode, KeepRowsTxn* txn);
  Status planTierTruncate(const Stream& s, int32_t newLength, uint32_t* keepBlocks, std::vector<uint32_t>* tierBlocks) const;
  std::vector<TierFormat> tiers_;
  std::vector<float> tierQueries_, tierOut_, tierLse_, tierScores_, tierRows_;
  std::vector<int32_t> tierPositions_;
  // Low-rank counterparts (lowrank.cpp).
  struct StreamWrite;
  Status writeStreams(std::vector<StreamWrite>& writes);
  Status appendLowRank(Sequence* seq, uint32_t layer, const AppendInput& input, const int32_t* positions);
  Status attentionChunkLowRank(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1);
  // calibratingOnly: only the streams without bases (the rest attend on a lifting backend).
  Status attentionChunkLowRankHost(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1,
                                   bool calibratingOnly = false);
  // Value rows onto / from a stream's value basis ([n][headDim] <-> [n][valueStoredDim]); a copy
  // when values are kept unprojected.
  void projectValueRows(const float* in, uint64_t inStride, uint32_t n, const LowRankBasis& b, float* out) const;
  // Calibration rows are held as f32 in a cache that stores keys or values as f32, else as
  // binary16 (HeldRows, sequence.h).
  bool heldF32() const { return config_.keys == Storage::kF32 || config_.values == Storage::kF32; }
  void liftValueRows(const float* coef, uint32_t n, const LowRankBasis& b, float* out) const;
  // Fits a stream's bases on n rows [n][headDim] (no value basis when values stay unprojected).
  Status fitStreamBases(const float* keys, const float* values, uint32_t n, LowRankBasis* out) const;
  Status readLowRank(const Stream& s, RowsOut* out);
  Status streamRowsFull(const Stream& s, std::vector<float>* keys, std::vector<float>* values, std::vector<float>* beta,
                        std::vector<int32_t>* positions);
  Status rebase(Sequence* seq, const std::vector<uint32_t>& streams, const std::vector<std::shared_ptr<const LowRankBasis>>& bases,
                bool refit);
  void projectLog(QueryLog& log, const LowRankBasis* from, const LowRankBasis& to) const;
  void recordQueriesLowRank(Stream& stream, uint32_t streamIndex, const float* queries, uint32_t tq, uint64_t tokenStride,
                            const int32_t* positions);
  std::vector<float> lowRankQueryScratch_, lowRankOutScratch_;
  std::vector<float> hostRopeCos_, hostRopeSin_;  // kvc/rope.h level tables of the host low-rank path
  std::vector<LowRankHostScratch> lowRankHostScratch_;  // one per host thread
  // Bytes of the scratch above (and the low-rank query / output buffers), for stats().
  uint64_t hostScratchBytes() const;
  // Projection, lift, basis fit and calibration attention on host memory: the backend's own,
  // or the host implementation (a device backend attends over coefficient rows it holds).
  const LowRankKernels* lowRank_ = nullptr;

  CacheConfig config_;
  BlockLayout layout_;
  std::unique_ptr<Backend> backend_;
  BlockPool pool_;
  std::vector<float> keySigns_, valueSigns_;  // Hadamard sign flips, empty when not rotated
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> sequences_;
  uint64_t nextSequenceId_ = 1;
  std::vector<AttentionStream> attentionScratch_;
  std::vector<int32_t> queryPositionScratch_;
  std::vector<SummaryJob> summaryJobs_;
  SparsePlanner sparse_;
  std::mutex backgroundMutex_;
  std::condition_variable backgroundLeft_;
  uint32_t backgroundCount_ = 0;
  std::atomic<bool> cancelBackground_{false};
};

// Builds the backend named by config.device ('cpu' or 'cuda') and the cache over it.
// `cudaFactory`, when given, replaces the CUDA backend (the binding passes the emulated
// backend here for parity tests on machines without a GPU).
using BackendFactory = std::unique_ptr<Backend> (*)(const BackendOptions&);
Status createCache(const CacheConfig& config, std::unique_ptr<Cache>* out, BackendFactory cudaFactory = nullptr);

}  // namespace kvc
