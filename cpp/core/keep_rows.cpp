// Cache::keepRows as a two-phase transaction (see cache.h, KeepRowsTxn): prepare gathers the
// kept rows where no visible stream reads them, commit swaps the block tables and releases
// the old blocks, abort puts everything back. Eviction calls keepRows (prepare + commit);
// compaction re-encodes the fitted rows between prepare and commit.
#include <algorithm>
#include <string>

#include "cache.h"

namespace kvc {

namespace {

uint32_t blocksFor(uint64_t rows, uint32_t blockSize) { return static_cast<uint32_t>((rows + blockSize - 1) / blockSize); }

// Whether rebuilt block b (rows [bB, min(bB + B, count)) of the keep set) is exactly an old
// block, row for row, so that kMove can keep that block instead of copying it.
bool wholeOldBlock(const int32_t* rows, uint32_t count, uint32_t b, uint32_t B) {
  const uint32_t first = b * B, n = std::min(B, count - first);
  if (rows[first] % static_cast<int32_t>(B) != 0) return false;
  // Keep rows are ascending and unique: the run is contiguous iff its last row is first + n - 1.
  return rows[first + n - 1] == rows[first] + static_cast<int32_t>(n) - 1;
}

}  // namespace

KeepRowsTxn::~KeepRowsTxn() {
  if (pending()) abort();
}

KeepRowsTxn& KeepRowsTxn::operator=(KeepRowsTxn&& other) noexcept {
  if (this != &other) {
    if (pending()) abort();
    cache_ = other.cache_;
    sequence_ = other.sequence_;
    changes_ = std::move(other.changes_);
    fresh_ = std::move(other.fresh_);
    other.cache_ = nullptr;
    other.sequence_ = nullptr;
  }
  return *this;
}

StreamView KeepRowsTxn::stream(uint32_t i) const {
  const Change& c = changes_[i];
  return StreamView{c.blocks.data(), static_cast<int32_t>(c.rows.size())};
}

void KeepRowsTxn::commit() {
  if (pending()) cache_->commitKeep(this);
}

Status KeepRowsTxn::abort() { return pending() ? cache_->abortKeep(this) : Status::ok(); }

Status KeepRowsTxn::abortWith(const Status& cause) {
  const Status rollback = abort();
  if (rollback.isOk()) return cause;
  return Status(cause.code(), cause.message() + "; restoring the rows rebuilt in place failed too (" + rollback.message() +
                                  "): the sequence's rows are unreliable, free it");
}

Status Cache::keepRows(uint64_t id, const KeepSet* sets, uint32_t count) {
  KeepRowsTxn txn;
  KVC_RETURN_IF_ERROR(prepareKeepRows(id, sets, count, KeepRowsMode::kMove, &txn));
  txn.commit();
  return Status::ok();
}

Status Cache::prepareKeepRows(uint64_t id, const KeepSet* sets, uint32_t count, KeepRowsMode mode, KeepRowsTxn* txn) {
  KVC_RETURN_IF_ERROR(txn->abort());
  // Tiered streams are rebuilt through a staged copy (keepRowsTiered, tiers/tier_rebuild.cpp).
  if (config_.tiered()) return unsupported("keepRows on a cache with tiers goes through keepRowsTiered");
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  return prepareKeepRowsOn(seq, sets, count, mode, txn);
}

Status Cache::prepareKeepRowsOn(Sequence* seq, const KeepSet* sets, uint32_t count, KeepRowsMode mode, KeepRowsTxn* txn) {
  KVC_RETURN_IF_ERROR(txn->abort());
  if (seq->busy) return busy("the sequence is being compacted");
  const uint32_t B = config_.blockSize, H = config_.kvHeads;
  const bool move = mode == KeepRowsMode::kMove;

  // Validate, and count the fresh blocks of each stream (kMove reuses whole old blocks).
  std::vector<uint8_t> named(seq->streams.size(), 0);
  std::vector<uint8_t> exclusive(count);
  uint64_t freshTotal = 0, freshShared = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const KeepSet& k = sets[i];
    KVC_RETURN_IF_ERROR(checkLayer(k.layer));
    if (k.head >= H) return invalidArgument("kvHead " + std::to_string(k.head) + " is out of range");
    if (named[k.layer * H + k.head]++) {
      return invalidArgument("keep sets name layer " + std::to_string(k.layer) + " kv head " + std::to_string(k.head) + " twice");
    }
    const Stream& s = seq->stream(k.layer, H, k.head);
    for (uint32_t j = 0; j < k.count; ++j) {
      if (k.rows[j] < 0 || k.rows[j] >= s.length || (j > 0 && k.rows[j] <= k.rows[j - 1])) {
        return invalidArgument("keep rows must be ascending, unique and in [0, " + std::to_string(s.length) + ")");
      }
    }
    uint32_t n = 0;
    for (uint32_t b = 0; b < blocksFor(k.count, B); ++b) n += move && wholeOldBlock(k.rows, k.count, b, B) ? 0 : 1;
    bool owned = true;
    for (int32_t b : s.blocks) owned = owned && pool_.refCount(b) == 1;
    exclusive[i] = owned;
    freshTotal += n;
    if (!owned) freshShared += n;
  }
  // Fresh blocks for every stream when the pool has room; otherwise streams that own all
  // their blocks are rebuilt in place (as much memory as before, with a host copy of the
  // rows they overwrite) and only streams sharing blocks with a fork need fresh ones.
  const bool inPlaceFallback = freshTotal > pool_.available();
  const uint64_t freshNeeded = inPlaceFallback ? freshShared : freshTotal;
  if (freshNeeded > pool_.available()) {
    return outOfMemory("maxBytes exhausted: rebuilding streams shared with a fork needs " + std::to_string(freshNeeded) +
                       " more blocks, " + std::to_string(pool_.available()) + " free");
  }
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(static_cast<uint32_t>(freshNeeded), &fresh));

  // From here on the transaction owns the fresh blocks and the sequence: any failure aborts.
  txn->cache_ = this;
  txn->sequence_ = seq;
  txn->fresh_ = std::move(fresh);
  txn->changes_.assign(count, KeepRowsTxn::Change());
  seq->busy = true;
  size_t next = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const KeepSet& k = sets[i];
    KeepRowsTxn::Change& c = txn->changes_[i];
    c.stream = &seq->stream(k.layer, H, k.head);
    c.rows.assign(k.rows, k.rows + k.count);
    const uint32_t nb = blocksFor(k.count, B);
    c.inPlace = inPlaceFallback && exclusive[i];
    c.reused.assign(nb, 0);
    if (c.inPlace) {
      c.blocks.assign(c.stream->blocks.begin(), c.stream->blocks.begin() + nb);
    } else {
      c.blocks.resize(nb);
      for (uint32_t b = 0; b < nb; ++b) {
        if (move && wholeOldBlock(k.rows, k.count, b, B)) {
          c.blocks[b] = c.stream->blocks[k.rows[b * B] / B];
          c.reused[b] = 1;
        } else {
          c.blocks[b] = txn->fresh_[next++];
        }
      }
    }
  }

  // Every backend call that can fail. Reads first (the host copies of rows about to be
  // overwritten in place), then the gathers.
  const uint64_t keyBytes = config_.keyRowBytes(), valueBytes = config_.valueRowBytes();
  for (KeepRowsTxn::Change& c : txn->changes_) {
    if (!c.inPlace) continue;
    const uint32_t n = static_cast<uint32_t>(c.rows.size());
    // Rows that already sit where they belong (row j kept as row j) are not moved; kMove
    // leaves them untouched, kRewrite may re-encode any kept row, so then all are saved.
    uint32_t j1 = 0;
    while (j1 < n && c.rows[j1] == static_cast<int32_t>(j1)) ++j1;
    c.gatherStart = j1;
    const uint32_t j0 = move ? j1 : 0;
    c.backupStart = j0;
    const uint32_t m = n - j0;
    if (m == 0) continue;
    c.backupKeys.resize(m * keyBytes);
    c.backupValues.resize(m * valueBytes);
    c.backupBeta.resize(m);
    c.backupPositions.resize(m);
    const StreamView view{c.stream->blocks.data(), c.stream->length};
    const Status status = backend_->readRawRows(pool(), view, j0, m, c.backupKeys.data(), c.backupValues.data(),
                                                c.backupBeta.data(), c.backupPositions.data());
    if (!status.isOk()) return txn->abortWith(status);
    c.saved = true;
  }
  for (KeepRowsTxn::Change& c : txn->changes_) {
    const uint32_t n = static_cast<uint32_t>(c.rows.size());
    const StreamView src{c.stream->blocks.data(), c.stream->length};
    if (c.inPlace) {
      // Ascending keep rows only ever move towards the front: a forward copy is safe.
      const uint32_t j1 = c.gatherStart;
      if (j1 == n) continue;
      const Status status = backend_->gatherRows(pool(), src, c.rows.data() + j1, n - j1, src, j1);
      if (!status.isOk()) return txn->abortWith(status);
      continue;
    }
    // One gather per run of rebuilt blocks that are not reused old blocks.
    const StreamView dst{c.blocks.data(), static_cast<int32_t>(n)};
    for (uint32_t b = 0; b < c.blocks.size();) {
      if (c.reused[b]) {
        ++b;
        continue;
      }
      uint32_t e = b;
      while (e < c.blocks.size() && !c.reused[e]) ++e;
      const uint32_t r0 = b * B, r1 = std::min<uint32_t>(e * B, n);
      const Status status = backend_->gatherRows(pool(), src, c.rows.data() + r0, r1 - r0, dst, r0);
      if (!status.isOk()) return txn->abortWith(status);
      b = e;
    }
  }
  return txn->refreshSummaries();
}

// Key summaries of every rebuilt block that is not an old block kept as it is.
Status KeepRowsTxn::refreshSummaries() {
  if (!pending()) return Status::ok();
  for (Change& c : changes_) {
    const int64_t n = static_cast<int64_t>(c.rows.size());
    for (uint32_t b = 0; b < c.blocks.size(); ++b) {
      if (c.reused[b]) continue;
      const Status status = cache_->refreshSummaries(c.blocks.data(), n, b, b + 1);
      if (!status.isOk()) return abortWith(status);
    }
  }
  return Status::ok();
}

void Cache::commitKeep(KeepRowsTxn* txn) {
  Sequence* seq = txn->sequence_;
  for (KeepRowsTxn::Change& c : txn->changes_) {
    Stream& s = *c.stream;
    // A rebuilt stream no longer matches an outstanding snapshot (replace_prefix.cpp).
    if (!seq->intact.empty()) seq->intact[static_cast<size_t>(&s - seq->streams.data())] = 0;
    if (c.inPlace) {
      for (size_t b = c.blocks.size(); b < s.blocks.size(); ++b) pool_.release(s.blocks[b]);
    } else {
      // Retain the reused blocks before the old table lets go of them.
      for (size_t b = 0; b < c.blocks.size(); ++b) {
        if (c.reused[b]) pool_.retain(c.blocks[b]);
      }
      for (int32_t b : s.blocks) pool_.release(b);
    }
    s.blocks = std::move(c.blocks);
    const uint32_t n = static_cast<uint32_t>(c.rows.size());
    if (!s.scores.empty()) {
      for (uint32_t j = 0; j < n; ++j) s.scores[j] = s.scores[c.rows[j]];
      s.scores.resize(n);
    }
    s.length = static_cast<int32_t>(n);
  }
  txn->sequence_->busy = false;
  txn->changes_.clear();
  txn->fresh_.clear();
  txn->cache_ = nullptr;
  txn->sequence_ = nullptr;
}

Status Cache::abortKeep(KeepRowsTxn* txn) {
  Status result;
  for (KeepRowsTxn::Change& c : txn->changes_) {
    if (!c.saved) continue;
    const uint32_t m = static_cast<uint32_t>(c.rows.size()) - c.backupStart;
    const StreamView view{c.stream->blocks.data(), c.stream->length};
    const Status status = backend_->writeRawRows(pool(), view, c.backupStart, m, c.backupKeys.data(), c.backupValues.data(),
                                                 c.backupBeta.data(), c.backupPositions.data());
    if (!status.isOk() && result.isOk()) result = status;
    // The restored rows' blocks get their summaries back.
    const Status summaries = refreshSummaries(c.stream->blocks.data(), c.stream->length, c.backupStart / config_.blockSize,
                                              static_cast<uint32_t>(c.stream->blocks.size()));
    if (!summaries.isOk() && result.isOk()) result = summaries;
  }
  for (int32_t b : txn->fresh_) pool_.release(b);
  txn->sequence_->busy = false;
  txn->changes_.clear();
  txn->fresh_.clear();
  txn->cache_ = nullptr;
  txn->sequence_ = nullptr;
  return result;
}

}  // namespace kvc
