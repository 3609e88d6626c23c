// Background maintenance support (cache.h, Cache::snapshot / Cache::replacePrefix): a cheap
// copy-on-write snapshot of a sequence, and the atomic swap that puts the snapshot's rows
// (evicted or compacted meanwhile) in place of the rows it was taken from, keeping every row
// the sequence gained since. The swap is all or nothing (cache.h, "Transactions"): it plans,
// allocates and copies into fresh blocks first and changes the bookkeeping only at the end.
#include <algorithm>
#include <numeric>
#include <string>

#include "cache.h"

namespace kvc {

namespace {

uint32_t blocksFor(uint64_t rows, uint32_t blockSize) { return static_cast<uint32_t>((rows + blockSize - 1) / blockSize); }

// The new block table of one stream and how it is made.
struct Splice {
  std::vector<int32_t> table;  // the stream's new block table
  uint32_t sharedSnapshot = 0; // table[0, sharedSnapshot): whole blocks of the snapshot, shared
  uint32_t reusedFrom = 0;     // table[sharedSnapshot, ...): blocks of the sequence from this index on, kept
  bool reuseTail = false;      // the tail rows stay in the sequence's own blocks (block-aligned case)
  uint32_t fresh = 0;          // otherwise: fresh blocks that receive copies
  int32_t length = 0;
};

}  // namespace

void Cache::spliceScores(Stream* dst, const Stream& src, int32_t P, int32_t M, int32_t length) {
  if (dst->scores.empty() && src.scores.empty()) return;
  // The snapshot's rows bring the scores they had (mass accumulated by the sequence on them
  // after the snapshot is not carried over); the kept rows keep theirs.
  std::vector<float> scores(static_cast<size_t>(length), 0.0f);
  if (!src.scores.empty()) std::copy(src.scores.begin(), src.scores.begin() + M, scores.begin());
  if (!dst->scores.empty()) std::copy(dst->scores.begin() + P, dst->scores.begin() + dst->length, scores.begin() + M);
  dst->scores = std::move(scores);
}

Status Cache::snapshot(uint64_t id, uint64_t* child) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  // Low-rank streams: the swap splices coefficient rows, which mean the same only under the
  // same bases, so every stream must have fitted its bases (replacePrefix checks they stay).
  for (size_t i = 0; config_.lowRank() && i < seq->streams.size(); ++i) {
    if (!seq->streams[i].basis) {
      return unsupported("a snapshot of a low-rank sequence needs every stream's bases: layer " + std::to_string(i / config_.kvHeads) +
                         " kv head " + std::to_string(i % config_.kvHeads) + " is still calibrating");
    }
  }
  KVC_RETURN_IF_ERROR(fork(id, child));
  Sequence* snap = sequences_.at(*child).get();
  seq = sequences_.at(id).get();  // fork may have rehashed the map (the objects stay put)
  snap->snapshotOf = id;
  snap->snapshotRows.resize(seq->streams.size());
  for (size_t i = 0; i < seq->streams.size(); ++i) snap->snapshotRows[i] = seq->streams[i].length;
  seq->intact = snap->snapshotRows;
  return Status::ok();
}

Status Cache::replacePrefix(uint64_t id, uint64_t snapshotId) {
  Sequence* seq;
  Sequence* snap;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  KVC_RETURN_IF_ERROR(find(snapshotId, &snap));
  if (seq->busy || snap->busy) return busy("the sequence is being compacted");
  const size_t S = seq->streams.size();
  if (snap->snapshotOf != id || snap->snapshotRows.size() != S) {
    return invalidArgument("the second sequence is not a snapshot of the first");
  }
  if (seq->intact.size() != S) return aborted("the sequence already took the rows of a snapshot (or of a newer one)");
  for (size_t i = 0; i < S; ++i) {
    if (seq->intact[i] < snap->snapshotRows[i]) {
      return aborted("the sequence changed below the snapshot (truncated, evicted or compacted) in layer " +
                     std::to_string(i / config_.kvHeads) + " kv head " + std::to_string(i % config_.kvHeads) +
                     "; nothing was replaced");
    }
  }
  for (size_t i = 0; i < S; ++i) {
    if (seq->streams[i].basis != snap->streams[i].basis) {
      return aborted("the bases of layer " + std::to_string(i / config_.kvHeads) + " kv head " + std::to_string(i % config_.kvHeads) +
                     " changed after the snapshot (fitBases); nothing was replaced");
    }
  }
  // Tiered streams hold blocks of several formats in tier order (tiers/tier_splice.cpp).
  if (config_.tiered()) return replacePrefixTiered(seq, snap);
  const uint32_t B = config_.blockSize;

  // Plan every stream: the snapshot's whole blocks are shared; the snapshot's last partial
  // block and the rows the sequence gained are copied into fresh blocks, unless both
  // boundaries fall on whole blocks (then the sequence's own tail blocks are kept).
  std::vector<Splice> plan(S);
  uint64_t freshTotal = 0;
  for (size_t i = 0; i < S; ++i) {
    const Stream& dst = seq->streams[i];
    const Stream& src = snap->streams[i];
    Splice& p = plan[i];
    const int32_t P = snap->snapshotRows[i], M = src.length, tail = dst.length - P;
    p.length = M + tail;
    p.sharedSnapshot = static_cast<uint32_t>(M) / B;
    p.table.assign(src.blocks.begin(), src.blocks.begin() + p.sharedSnapshot);
    const uint32_t rest = static_cast<uint32_t>(M) % B + static_cast<uint32_t>(tail);
    if (rest == 0) continue;
    if (static_cast<uint32_t>(M) % B == 0 && static_cast<uint32_t>(P) % B == 0) {
      p.reuseTail = true;
      p.reusedFrom = static_cast<uint32_t>(P) / B;
      p.table.insert(p.table.end(), dst.blocks.begin() + p.reusedFrom, dst.blocks.end());
    } else {
      p.fresh = blocksFor(rest, B);
      freshTotal += p.fresh;
    }
  }
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(static_cast<uint32_t>(freshTotal), &fresh));
  auto fail = [&](const Status& st) {
    for (int32_t b : fresh) pool_.release(b);
    return st;
  };

  // Every backend call that can fail, into the fresh blocks only.
  size_t next = 0;
  std::vector<int32_t> rows;
  for (size_t i = 0; i < S; ++i) {
    Splice& p = plan[i];
    if (p.fresh == 0) continue;
    p.table.insert(p.table.end(), fresh.begin() + static_cast<std::ptrdiff_t>(next),
                   fresh.begin() + static_cast<std::ptrdiff_t>(next + p.fresh));
    next += p.fresh;
    const Stream& dst = seq->streams[i];
    const Stream& src = snap->streams[i];
    const int32_t P = snap->snapshotRows[i], M = src.length, first = static_cast<int32_t>(p.sharedSnapshot * B);
    const StreamView out{p.table.data(), p.length};
    if (M > first) {
      rows.resize(static_cast<size_t>(M - first));
      std::iota(rows.begin(), rows.end(), first);
      const StreamView in{src.blocks.data(), src.length};
      const Status st = backend_->gatherRows(pool(), in, rows.data(), static_cast<uint32_t>(rows.size()), out, static_cast<uint32_t>(first));
      if (!st.isOk()) return fail(st);
    }
    if (dst.length > P) {
      rows.resize(static_cast<size_t>(dst.length - P));
      std::iota(rows.begin(), rows.end(), P);
      const StreamView in{dst.blocks.data(), dst.length};
      const Status st = backend_->gatherRows(pool(), in, rows.data(), static_cast<uint32_t>(rows.size()), out, static_cast<uint32_t>(M));
      if (!st.isOk()) return fail(st);
    }
    const Status st = refreshSummaries(p.table.data(), p.length, p.sharedSnapshot, static_cast<uint32_t>(p.table.size()));
    if (!st.isOk()) return fail(st);
  }

  // Commit (cannot fail): retain what the new tables share before the old ones let go.
  for (size_t i = 0; i < S; ++i) {
    Stream& dst = seq->streams[i];
    const Stream& src = snap->streams[i];
    Splice& p = plan[i];
    for (uint32_t b = 0; b < p.sharedSnapshot; ++b) pool_.retain(p.table[b]);
    if (p.reuseTail) {
      for (size_t b = p.sharedSnapshot; b < p.table.size(); ++b) pool_.retain(p.table[b]);
    }
    for (int32_t b : dst.blocks) pool_.release(b);
    const int32_t P = snap->snapshotRows[i], M = src.length;
    spliceScores(&dst, src, P, M, p.length);
    dst.blocks = std::move(p.table);
    dst.length = p.length;
  }
  seq->intact.clear();
  return Status::ok();
}

}  // namespace kvc
