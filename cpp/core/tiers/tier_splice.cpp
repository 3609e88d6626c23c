// Background maintenance of tiered sequences (replace_prefix.cpp): the swap of a snapshot's
// rows (evicted or compacted meanwhile) in place of the rows it was taken from, for streams
// whose blocks run from the lowest tier to tier 0. The snapshot's aged blocks are shared as
// they are; its tier-0 rows and the rows the sequence gained since (still in its tier 0) are
// copied bit-exactly into fresh tier-0 blocks, where they age at the next append.
// All or nothing, like replacePrefix.
#include <numeric>
#include <string>

#include "../cache.h"

namespace kvc {

Status Cache::replacePrefixTiered(Sequence* seq, const Sequence* snap) {
  const size_t S = seq->streams.size();
  const uint32_t B = config_.blockSize;
  struct Splice {
    std::vector<int32_t> table;
    uint32_t shared = 0;  // table[0, shared): the snapshot's aged blocks
    int32_t length = 0;
  };
  std::vector<Splice> plan(S);
  uint64_t freshTotal = 0;
  for (size_t i = 0; i < S; ++i) {
    const Stream& dst = seq->streams[i];
    const Stream& src = snap->streams[i];
    const int32_t P = snap->snapshotRows[i], tail = dst.length - P;
    if (tail > 0 && agedRows(dst) > P) {
      // Rows appended during the pass already aged: they would have to move back up a tier.
      return aborted("rows appended during the pass already aged into a lower tier (layer " + std::to_string(i / config_.kvHeads) +
                     " kv head " + std::to_string(i % config_.kvHeads) + "); nothing was replaced");
    }
    Splice& p = plan[i];
    p.length = src.length + tail;
    p.shared = agedBlocks(src);
    p.table.assign(src.blocks.begin(), src.blocks.begin() + p.shared);
    const uint32_t top = static_cast<uint32_t>(src.length - agedRows(src) + tail);
    freshTotal += (top + B - 1) / B;
  }
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(static_cast<uint32_t>(freshTotal), &fresh));
  auto fail = [&](const Status& st) {
    for (int32_t b : fresh) pool_.release(b);
    return st;
  };
  size_t next = 0;
  std::vector<int32_t> rows;
  for (size_t i = 0; i < S; ++i) {
    Splice& p = plan[i];
    const Stream& dst = seq->streams[i];
    const Stream& src = snap->streams[i];
    const int32_t P = snap->snapshotRows[i];
    const int32_t srcAged = agedRows(src), dstAged = agedRows(dst);
    const uint32_t top = static_cast<uint32_t>(src.length - srcAged + dst.length - P);
    const uint32_t n = (top + B - 1) / B;
    p.table.insert(p.table.end(), fresh.begin() + static_cast<std::ptrdiff_t>(next), fresh.begin() + static_cast<std::ptrdiff_t>(next + n));
    next += n;
    if (top == 0) continue;
    const StreamView out{p.table.data() + p.shared, static_cast<int32_t>(top)};
    // The snapshot's tier-0 rows, then the rows the sequence gained (both in tier 0's format).
    if (src.length > srcAged) {
      rows.resize(static_cast<size_t>(src.length - srcAged));
      std::iota(rows.begin(), rows.end(), 0);
      const StreamView in{src.blocks.data() + agedBlocks(src), src.length - srcAged};
      const Status st = backend_->gatherRows(tierPool(0), in, rows.data(), static_cast<uint32_t>(rows.size()), out, 0);
      if (!st.isOk()) return fail(st);
    }
    if (dst.length > P) {
      rows.resize(static_cast<size_t>(dst.length - P));
      std::iota(rows.begin(), rows.end(), P - dstAged);
      const StreamView in{dst.blocks.data() + agedBlocks(dst), dst.length - dstAged};
      const Status st = backend_->gatherRows(tierPool(0), in, rows.data(), static_cast<uint32_t>(rows.size()), out,
                                             static_cast<uint32_t>(src.length - srcAged));
      if (!st.isOk()) return fail(st);
    }
  }
  // Commit (cannot fail). Tier 0 ages at the next append.
  for (size_t i = 0; i < S; ++i) {
    Stream& dst = seq->streams[i];
    const Stream& src = snap->streams[i];
    Splice& p = plan[i];
    for (uint32_t b = 0; b < p.shared; ++b) pool_.retain(p.table[b]);
    for (int32_t b : dst.blocks) pool_.release(b);
    spliceScores(&dst, src, snap->snapshotRows[i], src.length, p.length);
    dst.blocks = std::move(p.table);
    dst.length = p.length;
    dst.tierBlocks = src.tierBlocks;
    dst.tierBlocks.resize(tiers_.size(), 0);
  }
  seq->intact.clear();
  return Status::ok();
}

}  // namespace kvc
