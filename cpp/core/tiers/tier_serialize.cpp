// Export format version 4 (docs/kvc-format.md): the sequence of a cache with precision tiers.
//   header  as versions 1-3 ("KVCSEQ01" | u32 4 | u32 headerBytes | config fields; keys and
//           values are the top tier's) | u32 tierCount | per tier: u32 rows, u32 keys, u32 values
//   i32 nextPosition[layers]
//   per stream: i32 length | u32 rowsInTier[tierCount]   (tier 0 first; they sum to length)
//   per stream, per tier from the last (oldest rows) to tier 0: the rows in that tier's
//     format as versions 1-3 store them: keyRows | valueRows | f32 beta | i32 positions
//   u32 crc32 of everything before it
// Each row keeps the format of the block it was in (bit-exact); blocks are not stored. An
// importing cache needs the same tiers, and each aged tier's rows must fill whole blocks of
// it (same blockSize, shape and formats give the same rows per block).
#include <cstring>
#include <string>

#include "../cache.h"
#include "../crc32.h"
#include "tier_serialize.h"

namespace kvc {

namespace {

void put(std::vector<uint8_t>* out, const void* p, size_t n) {
  const size_t at = out->size();
  out->resize(at + n);
  if (n) std::memcpy(out->data() + at, p, n);
}

template <typename T> void putValue(std::vector<uint8_t>* out, T v) { put(out, &v, sizeof v); }

// The cache config with one tier's formats, for the row checks and sizes of that tier.
CacheConfig tierConfig(const CacheConfig& c, const TierFormat& t) {
  CacheConfig x = c;
  x.keys = t.keys;
  x.values = t.values;
  x.tiers.clear();
  return x;
}

}  // namespace

Status Cache::exportTiered(const Sequence& seq, std::vector<uint8_t>* out) {
  const uint32_t T = static_cast<uint32_t>(tiers_.size());
  out->clear();
  writeSequenceHeader(config_, kTieredFormatVersion, sequenceHeaderBytes() + 4 + 12 * T, out);
  putValue(out, T);
  for (const TierSpec& t : config_.tiers) {
    putValue(out, t.rows);
    putValue(out, static_cast<uint32_t>(t.keys));
    putValue(out, static_cast<uint32_t>(t.values));
  }
  put(out, seq.nextPosition.data(), 4 * seq.nextPosition.size());
  std::vector<TierRun> runs;
  for (const Stream& s : seq.streams) {
    putValue(out, s.length);
    std::vector<uint32_t> rows(T, 0);
    tierRuns(s, &runs);
    for (const TierRun& run : runs) rows[run.tier] = static_cast<uint32_t>(run.rows);
    put(out, rows.data(), 4ull * T);
  }
  std::vector<uint8_t> keys, values;
  std::vector<float> beta;
  std::vector<int32_t> positions;
  for (const Stream& s : seq.streams) {
    tierRuns(s, &runs);
    for (const TierRun& run : runs) {
      const BlockLayout& L = tiers_[run.tier].layout;
      const uint32_t n = static_cast<uint32_t>(run.rows);
      keys.resize(static_cast<size_t>(n) * L.keyRowBytes);
      values.resize(static_cast<size_t>(n) * L.valueRowBytes);
      beta.resize(n);
      positions.resize(n);
      StreamView view{s.blocks.data() + run.firstBlock, run.rows};
      KVC_RETURN_IF_ERROR(backend_->readRawRows(tierPool(run.tier), view, 0, n, keys.data(), values.data(), beta.data(), positions.data()));
      put(out, keys.data(), keys.size());
      put(out, values.data(), values.size());
      put(out, beta.data(), 4ull * n);
      put(out, positions.data(), 4ull * n);
    }
  }
  putValue(out, crc32(out->data(), out->size()));
  return Status::ok();
}

// Called by importSequence after the magic and the checksum were verified.
Status Cache::importTiered(const uint8_t* bytes, size_t size, uint64_t* id) {
  const size_t end = size - 4;  // the checksum
  size_t at = 8 + 4;
  auto take = [&](size_t n) -> const uint8_t* {
    if (n > end - at) return nullptr;
    const uint8_t* p = bytes + at;
    at += n;
    return p;
  };
  auto u32 = [&](uint32_t* v) {
    const uint8_t* p = take(4);
    if (p) std::memcpy(v, p, 4);
    return p != nullptr;
  };
  uint32_t headerBytes = 0, T = 0;
  if (!u32(&headerBytes)) return corruptData("truncated sequence bytes");
  const uint8_t* fields = take(sequenceHeaderBytes() - 16);
  if (!fields || !u32(&T)) return corruptData("truncated sequence bytes");
  if (T < 2 || T > schema::tiers::kCountMax || headerBytes != sequenceHeaderBytes() + 4 + 12 * T) return corruptData("bad header size");
  KVC_RETURN_IF_ERROR(checkSequenceFields(config_, fields));
  bool same = T == tiers_.size();
  for (uint32_t k = 0; k < T; ++k) {
    uint32_t rows, keys, values;
    if (!u32(&rows) || !u32(&keys) || !u32(&values)) return corruptData("truncated sequence bytes");
    if (same) {
      same = rows == config_.tiers[k].rows && keys == static_cast<uint32_t>(config_.tiers[k].keys) &&
             values == static_cast<uint32_t>(config_.tiers[k].values);
    }
  }
  if (!config_.tiered()) return invalidArgument("the sequence was exported from a cache with tiers; this cache has none");
  if (!same) return invalidArgument("the sequence was exported with other tiers (rows or formats) than this cache uses");

  std::vector<int32_t> nextPositions(config_.layers);
  const uint8_t* np = take(4ull * config_.layers);
  if (!np) return corruptData("truncated sequence bytes");
  std::memcpy(nextPositions.data(), np, 4ull * config_.layers);
  for (int32_t next : nextPositions) {
    if (next < 0) return corruptData("negative next position");
  }
  const uint32_t streams = config_.streamsPerSequence();
  std::vector<int32_t> lengths(streams);
  std::vector<uint32_t> rows(static_cast<size_t>(streams) * T);
  uint64_t total = 0, blocksNeeded = 0;
  for (uint32_t i = 0; i < streams; ++i) {
    const uint8_t* p = take(4ull * (1 + T));
    if (!p) return corruptData("truncated sequence bytes");
    std::memcpy(&lengths[i], p, 4);
    std::memcpy(rows.data() + static_cast<size_t>(i) * T, p + 4, 4ull * T);
    if (lengths[i] < 0) return corruptData("negative stream length");
    uint64_t sum = 0;
    for (uint32_t k = 0; k < T; ++k) {
      const uint32_t n = rows[static_cast<size_t>(i) * T + k];
      const TierFormat& f = tiers_[k];
      sum += n;
      total += static_cast<uint64_t>(n) * (f.layout.keyRowBytes + f.layout.valueRowBytes + 8ull);
      if (total > end - at) return corruptData("the stream lengths declare more rows than the sequence bytes hold");
      if (k > 0 && n % f.rowsPerBlock != 0) {
        return invalidArgument("tier " + std::to_string(k) + " of stream " + std::to_string(i) + " holds " + std::to_string(n) +
                               " rows, not whole blocks of this cache (" + std::to_string(f.rowsPerBlock) +
                               " rows per block): it was exported with another blockSize");
      }
      blocksNeeded += (n + f.rowsPerBlock - 1) / f.rowsPerBlock;
    }
    if (sum != static_cast<uint64_t>(lengths[i])) return corruptData("the rows of the tiers of a stream do not add up to its length");
  }
  if (total != end - at) return corruptData("sequence bytes do not match the stream lengths they declare");
  if (blocksNeeded > INT32_MAX) return outOfMemory("the sequence needs more than 2^31 blocks");
  // Check every run in its tier's format before anything is allocated.
  size_t check = at;
  for (uint32_t i = 0; i < streams; ++i) {
    for (uint32_t k = T; k-- > 0;) {
      const uint32_t n = rows[static_cast<size_t>(i) * T + k];
      if (n == 0) continue;
      const TierFormat& f = tiers_[k];
      const size_t bytesOfRun = static_cast<size_t>(n) * (f.layout.keyRowBytes + f.layout.valueRowBytes + 8ull);
      KVC_RETURN_IF_ERROR(validateEncodedRows(tierConfig(config_, f), {static_cast<int32_t>(n)}, bytes + check, bytesOfRun));
      check += bytesOfRun;
    }
  }
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(static_cast<uint32_t>(blocksNeeded), &fresh));
  auto seq = std::make_unique<Sequence>();
  seq->streams.resize(streams);
  seq->nextPosition = std::move(nextPositions);
  size_t next = 0;
  std::vector<float> beta;
  std::vector<int32_t> positions;
  for (uint32_t i = 0; i < streams; ++i) {
    Stream& s = seq->streams[i];
    s.length = lengths[i];
    s.tierBlocks.assign(T, 0);
    for (uint32_t k = T; k-- > 0;) {
      const uint32_t n = rows[static_cast<size_t>(i) * T + k];
      if (n == 0) continue;
      const TierFormat& f = tiers_[k];
      const uint32_t nb = (n + f.rowsPerBlock - 1) / f.rowsPerBlock;
      const size_t firstBlock = s.blocks.size();
      s.blocks.insert(s.blocks.end(), fresh.begin() + next, fresh.begin() + next + nb);
      next += nb;
      if (k > 0) s.tierBlocks[k] = nb;
      const uint8_t* kr = take(static_cast<size_t>(n) * f.layout.keyRowBytes);
      const uint8_t* vr = take(static_cast<size_t>(n) * f.layout.valueRowBytes);
      const uint8_t* b = take(4ull * n);
      const uint8_t* p = take(4ull * n);
      beta.resize(n);
      positions.resize(n);
      std::memcpy(beta.data(), b, 4ull * n);
      std::memcpy(positions.data(), p, 4ull * n);
      StreamView view{s.blocks.data() + firstBlock, static_cast<int32_t>(n)};
      const Status status = backend_->writeRawRows(tierPool(k), view, 0, n, kr, vr, beta.data(), positions.data());
      if (!status.isOk()) {
        for (int32_t blk : fresh) pool_.release(blk);
        return status;
      }
    }
  }
  seq->id = nextSequenceId_++;
  *id = seq->id;
  sequences_.emplace(seq->id, std::move(seq));
  return Status::ok();
}

}  // namespace kvc
