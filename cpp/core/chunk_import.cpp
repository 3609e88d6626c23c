// ChunkImport (chunk_import.h): a plain sequence built chunk by chunk, each chunk checked and
// written to its blocks in one pass, visible only once complete.
#include "chunk_import.h"

#include <climits>
#include <cstring>
#include <memory>
#include <string>

#include "crc32.h"
#include "tiers/tier_serialize.h"

namespace kvc {

ChunkImport::~ChunkImport() {
  if (!finished_) release();
}

void ChunkImport::release() {
  for (int32_t block : blocks_) cache_->pool_.release(block);
  blocks_.clear();
}

Status ChunkImport::fail(Status status) {
  failed_ = true;
  release();
  return status;
}

Status ChunkImport::begin(const uint8_t* prelude, size_t preludeBytes, const uint32_t* rows, uint32_t chunks) {
  if (begun_) return invalidArgument("the chunk import has begun already");
  const CacheConfig& c = cache_->config_;
  KVC_RETURN_IF_ERROR(checkPlainPrelude(c, prelude, preludeBytes));
  if (chunks == 0) return invalidArgument("a chunk import needs at least one chunk");
  uint64_t total = 0;
  for (uint32_t j = 0; j < chunks; ++j) {
    if (rows[j] == 0) return invalidArgument("chunk " + std::to_string(j) + " has no rows");
    starts_.push_back(static_cast<uint32_t>(total));
    total += rows[j];
    if (total > INT32_MAX - 1) return invalidArgument("a sequence holds at most 2^31 - 2 rows per stream");
  }
  const uint64_t perStream = (total + c.blockSize - 1) / c.blockSize;
  if (perStream * c.streamsPerSequence() > INT32_MAX) return outOfMemory("the sequence needs more than 2^31 blocks");
  KVC_RETURN_IF_ERROR(cache_->allocateBlocks(static_cast<uint32_t>(perStream * c.streamsPerSequence()), &blocks_));
  prelude_.assign(prelude, prelude + preludeBytes);
  rows_.assign(rows, rows + chunks);
  added_.assign(chunks, false);
  total_ = static_cast<uint32_t>(total);
  blocksPerStream_ = static_cast<uint32_t>(perStream);
  begun_ = true;
  return Status::ok();
}

Status ChunkImport::add(uint32_t chunk, const uint8_t* frame, size_t frameBytes, size_t payloadAt) {
  if (!begun_ || finished_) return invalidArgument("the chunk import has not begun or has finished");
  if (failed_) return corruptData("the chunk import failed on an earlier chunk");
  if (chunk >= rows_.size()) return invalidArgument("chunk " + std::to_string(chunk) + " of " + std::to_string(rows_.size()));
  if (added_[chunk]) return invalidArgument("chunk " + std::to_string(chunk) + " was added already");
  const CacheConfig& c = cache_->config_;
  const uint32_t streams = c.streamsPerSequence();
  const uint32_t r = rows_[chunk];
  const uint64_t kb = c.keyRowBytes(), vb = c.valueRowBytes(), perRow = kb + vb + 8;
  const uint64_t streamBytes = perRow * r;
  if (frameBytes < 4 || payloadAt > frameBytes - 4 || frameBytes - 4 - payloadAt != prelude_.size() + streamBytes * streams) {
    return fail(corruptData("chunk " + std::to_string(chunk) + ": its size does not match its rows"));
  }
  uint32_t stored;
  std::memcpy(&stored, frame + frameBytes - 4, 4);
  const uint8_t* payload = frame + payloadAt;
  // The frame's bytes up to the rows, then each stream's rows: checked, added to the checksum
  // and written to the stream's blocks while they are in cache. The blocks are not visible
  // before finish, so rows written ahead of a checksum that then fails are never read.
  uint32_t crc = crc32(frame, payloadAt + prelude_.size());
  const bool sameSequence = std::memcmp(payload, prelude_.data(), prelude_.size()) == 0;
  Status status = sameSequence ? Status::ok() : corruptData("chunk " + std::to_string(chunk) + " belongs to another sequence");
  beta_.resize(r);
  positions_.resize(r);
  const std::vector<int32_t> lengths{static_cast<int32_t>(r)};
  const uint8_t* rowsAt = payload + prelude_.size();
  for (uint32_t s = 0; s < streams && status.isOk(); ++s) {
    const uint8_t* k = rowsAt + streamBytes * s;
    status = validateEncodedRows(c, lengths, k, streamBytes, &crc);
    if (!status.isOk()) break;
    const uint8_t* v = k + kb * r;
    std::memcpy(beta_.data(), v + vb * r, 4ull * r);  // aligned copies: the bytes have no alignment
    std::memcpy(positions_.data(), v + vb * r + 4ull * r, 4ull * r);
    const StreamView view{blocks_.data() + static_cast<size_t>(s) * blocksPerStream_, static_cast<int32_t>(total_)};
    status = cache_->backend_->writeRawRows(cache_->pool(), view, starts_[chunk], r, k, v, beta_.data(), positions_.data());
  }
  // Damaged bytes are reported as damaged, whichever check saw them first.
  if (!status.isOk() && status.code() != StatusCode::kCorruptData) return fail(status);
  if (!status.isOk()) crc = crc32(frame, frameBytes - 4);
  if (crc != stored) return fail(corruptData("chunk " + std::to_string(chunk) + ": checksum mismatch: the bytes are damaged"));
  if (!status.isOk()) return fail(status);
  added_[chunk] = true;
  return Status::ok();
}

Status ChunkImport::finish(uint64_t* id) {
  if (!begun_ || finished_) return invalidArgument("the chunk import has not begun or has finished");
  if (failed_) return corruptData("the chunk import failed on an earlier chunk");
  for (size_t j = 0; j < added_.size(); ++j) {
    if (!added_[j]) return invalidArgument("chunk " + std::to_string(j) + " was never added");
  }
  Cache& cache = *cache_;
  const CacheConfig& c = cache.config_;
  auto seq = std::make_unique<Sequence>();
  seq->streams.resize(c.streamsPerSequence());
  for (size_t s = 0; s < seq->streams.size(); ++s) {
    Stream& stream = seq->streams[s];
    stream.length = static_cast<int32_t>(total_);
    stream.blocks.assign(blocks_.begin() + s * blocksPerStream_, blocks_.begin() + (s + 1) * blocksPerStream_);
    // Summaries are not exported: computed from the stored keys, as importSequence does.
    Status status = cache.refreshSummaries(stream.blocks.data(), total_, 0, blocksPerStream_);
    if (!status.isOk()) return fail(status);
  }
  // Every layer continues after the last row: the rows of a plain prefix are its tokens.
  seq->nextPosition.assign(c.layers, static_cast<int32_t>(total_));
  for (uint32_t layer = 0; c.tiered() && layer < c.layers; ++layer) cache.ageStreams(seq.get(), layer);
  finished_ = true;
  blocks_.clear();  // the sequence owns them now
  seq->id = cache.nextSequenceId_++;
  *id = seq->id;
  cache.sequences_.emplace(seq->id, std::move(seq));
  return Status::ok();
}

}  // namespace kvc
