// Cache operations: plan block changes, check the budget, run the backend, then mutate
// (see cache.h, "Transactions"). keepRows lives in keep_rows.cpp.
#include "cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kvc/finite.h"
#include "rotation_signs.h"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace kvc {

namespace {

uint32_t blocksFor(int64_t rows, uint32_t blockSize) {
  return static_cast<uint32_t>((rows + blockSize - 1) / blockSize);
}

uint64_t physicalMemoryBytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long pageSize = sysconf(_SC_PAGESIZE);
  if (pages > 0 && pageSize > 0) return static_cast<uint64_t>(pages) * static_cast<uint64_t>(pageSize);
#endif
  return uint64_t{16} << 30;
}

// Without maxBytes the pool reserves (and may use) at most this much: the reservation is
// address space (cheap, but finite: 128 TiB on x86-64), so thousands of caches must fit.
constexpr uint64_t kDefaultPoolBytes = uint64_t{8} << 30;
// Positions stay in [0, 2^31 - 2], so that nextPosition (last + 1) never overflows.
Status checkAppendPositions(const AppendInput& input, int32_t next) {
  if (!input.positions) {
    if (static_cast<int64_t>(next) + input.tokens > INT32_MAX) {
      return invalidArgument("positions would pass 2^31 - 2 (next position " + std::to_string(next) + ", " +
                             std::to_string(input.tokens) + " tokens)");
    }
    return Status::ok();
  }
  for (uint32_t t = 0; t < input.tokens; ++t) {
    if (input.positions[t] < 0 || input.positions[t] == INT32_MAX) {
      return invalidArgument("positions[" + std::to_string(t) + "] = " + std::to_string(input.positions[t]) +
                             " is outside [0, 2^31 - 2]");
    }
  }
  return Status::ok();
}

}  // namespace

Status createCache(const CacheConfig& config, std::unique_ptr<Cache>* out, BackendFactory cudaFactory) {
  KVC_RETURN_IF_ERROR(validateConfig(config));
  BackendOptions options;
  options.threads = config.threads;
  std::unique_ptr<Backend> backend;
  if (config.device == "cpu") {
    Status status;
    backend = createCpuBackend(options, &status);
    if (!backend) return status;
  } else if (config.device == "cuda" && cudaFactory) {
    backend = cudaFactory(options);
  } else if (config.device == "cuda") {
    Status status;
    backend = createCudaBackend(options, &status);
    if (!backend) return status;
  } else {
    return invalidArgument("device must be 'cpu' or 'cuda'");
  }
  return Cache::create(config, std::move(backend), out);
}

Status Cache::create(const CacheConfig& config, std::unique_ptr<Backend> backend, std::unique_ptr<Cache>* out) {
  KVC_RETURN_IF_ERROR(validateConfig(config));
  if (config.hostLowRank(backend->attendsValueDim(), backend->attendsLiftedKeys()) && config.device != "cpu") {
    // The host attention path would read every row back from the device on every call.
    return unsupported(config.ropeDims != 0 ? "lowRank with rope needs a backend that lifts low-rank keys before RoPE"
                                            : "lowRank with unequal key and value ranks needs a backend that attends value rows of their own width");
  }
  const BlockLayout layout = config.blockLayout();
  const uint64_t budget = config.maxBytes ? config.maxBytes : std::min(physicalMemoryBytes(), kDefaultPoolBytes);
  const uint64_t capacity = std::min<uint64_t>(budget / blockFootprint(layout), INT32_MAX);
  KVC_RETURN_IF_ERROR(backend->reservePool(capacity, layout.blockBytes));
  if (layout.summaryBytes) KVC_RETURN_IF_ERROR(backend->reserveSummaries(layout.summaryBytes));
  out->reset(new Cache(config, std::move(backend), capacity));
  return Status::ok();
}

Cache::Cache(const CacheConfig& config, std::unique_ptr<Backend> backend, uint64_t capacityBlocks)
    : config_(config), layout_(config.blockLayout()), backend_(std::move(backend)), pool_(capacityBlocks) {
  lowRank_ = backend_->lowRank() ? backend_->lowRank() : &hostLowRankKernels();
  if (config_.rotateKeys) keySigns_ = rotationSigns(config_.rotationSeed, 0, config_.headDim);
  if (config_.rotateValues) valueSigns_ = rotationSigns(config_.rotationSeed, 1, config_.headDim);
  if (config_.tiered()) tiers_ = tierFormats(config_);
}

Cache::~Cache() {
  cancelBackground_.store(true, std::memory_order_release);
  std::unique_lock<std::mutex> lock(backgroundMutex_);
  backgroundLeft_.wait(lock, [this] { return backgroundCount_ == 0; });
}

void Cache::enterBackground() {
  std::lock_guard<std::mutex> lock(backgroundMutex_);
  ++backgroundCount_;
}

void Cache::leaveBackground() {
  std::lock_guard<std::mutex> lock(backgroundMutex_);
  --backgroundCount_;
  backgroundLeft_.notify_all();
}

RowCodec Cache::codec() const {
  RowCodec c;
  c.keyStorage = config_.keys;
  c.valueStorage = config_.values;
  c.headDim = config_.storedDim();
  if (config_.valueStoredDim() != config_.storedDim()) c.valueDim = config_.valueStoredDim();
  c.groupSize = config_.groupSize;
  c.keySigns = keySigns_.empty() ? nullptr : keySigns_.data();
  c.valueSigns = valueSigns_.empty() ? nullptr : valueSigns_.data();
  return c;
}

Status Cache::find(uint64_t id, Sequence** out) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return Status(StatusCode::kDisposed, "the sequence has been freed");
  *out = it->second.get();
  return Status::ok();
}

Status Cache::findConst(uint64_t id, const Sequence** out) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return Status(StatusCode::kDisposed, "the sequence has been freed");
  *out = it->second.get();
  return Status::ok();
}

Status Cache::checkLayer(uint32_t layer) const {
  if (layer >= config_.layers) {
    return invalidArgument("layer " + std::to_string(layer) + " is out of range [0, " + std::to_string(config_.layers) + ")");
  }
  return Status::ok();
}

uint64_t Cache::createSequence() {
  auto seq = std::make_unique<Sequence>();
  seq->id = nextSequenceId_++;
  seq->streams.resize(config_.streamsPerSequence());
  seq->nextPosition.assign(config_.layers, 0);
  const uint64_t id = seq->id;
  sequences_.emplace(id, std::move(seq));
  return id;
}

Status Cache::fork(uint64_t parentId, uint64_t* child) {
  Sequence* parent;
  KVC_RETURN_IF_ERROR(find(parentId, &parent));
  if (parent->busy) return busy("the sequence is being compacted");
  auto seq = std::make_unique<Sequence>(*parent);
  seq->id = nextSequenceId_++;
  seq->busy = false;
  // Snapshot bookkeeping belongs to the parent (replace_prefix.cpp), not to its forks.
  seq->intact.clear();
  seq->snapshotOf = 0;
  seq->snapshotRows.clear();
  for (const Stream& s : seq->streams) {
    for (int32_t b : s.blocks) pool_.retain(b);
  }
  *child = seq->id;
  sequences_.emplace(seq->id, std::move(seq));
  return Status::ok();
}

void Cache::releaseStream(Stream& stream) {
  for (int32_t b : stream.blocks) pool_.release(b);
  stream.blocks.clear();
  stream.length = 0;
  stream.held.clear();
  stream.pendingPositions.clear();
  stream.basis.reset();
  stream.scores.clear();
}

Status Cache::freeSequence(uint64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return Status::ok();  // freeing twice is harmless
  if (it->second->busy) return busy("the sequence is being compacted");
  for (Stream& s : it->second->streams) releaseStream(s);
  sequences_.erase(it);
  return Status::ok();
}

Status Cache::allocateBlocks(uint32_t count, std::vector<int32_t>* out) {
  if (count > pool_.available()) {
    return outOfMemory("maxBytes exhausted: " + std::to_string(count) + " more blocks of " +
                       std::to_string(blockFootprint(layout_)) + " bytes needed, " + std::to_string(pool_.available()) +
                       " free (maxBytes " + std::to_string(pool_.capacity() * blockFootprint(layout_)) + ")");
  }
  KVC_RETURN_IF_ERROR(backend_->commitPool(pool_.highWaterAfter(count)));
  return pool_.allocate(count, out);
}

Status Cache::append(uint64_t id, uint32_t layer, const AppendInput& input) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  KVC_RETURN_IF_ERROR(checkLayer(layer));
  if (seq->busy) return busy("the sequence is being compacted");
  if (input.tokens == 0) return shapeMismatch("append needs at least one token");
  KVC_RETURN_IF_ERROR(checkAppendPositions(input, seq->nextPosition[layer]));
  const uint32_t heads = config_.kvHeads;
  const uint32_t B = config_.blockSize;

  // Plan: new blocks per stream, and copy-on-write of a shared, partly filled last block.
  uint32_t needed = 0;
  for (uint32_t h = 0; h < heads; ++h) {
    const Stream& s = seq->stream(layer, heads, h);
    if (static_cast<int64_t>(s.length) + input.tokens > INT32_MAX) return invalidArgument("stream length exceeds 2^31 rows");
    needed += blocksFor(s.length + static_cast<int64_t>(input.tokens), B) - blocksFor(s.length, B);
    if (s.length % B != 0 && pool_.refCount(s.blocks.back()) > 1) ++needed;
  }
  std::vector<int32_t> defaultPositions;
  const int32_t* positions = input.positions;
  if (!positions) {
    defaultPositions.resize(input.tokens);
    for (uint32_t t = 0; t < input.tokens; ++t) defaultPositions[t] = seq->nextPosition[layer] + static_cast<int32_t>(t);
    positions = defaultPositions.data();
  }
  if (config_.lowRank()) return appendLowRank(seq, layer, input, positions);

  std::vector<int32_t> fresh;
  fresh.reserve(needed);
  KVC_RETURN_IF_ERROR(allocateBlocks(needed, &fresh));

  // Extend the block tables, remembering what they held: the rows land beyond each stream's
  // length, in blocks no other stream reads, and lengths, positions and reference counts
  // change only after every backend call succeeded; a failure restores the tables (cheaper
  // than building copies of long tables on every decode step).
  size_t next = 0;
  std::vector<int32_t> cowSrc, cowDst;
  std::vector<size_t> oldSizes(heads);
  std::vector<int32_t> sharedLast(heads, -1);  // the shared block a copy replaces
  std::vector<const int32_t*> tables(heads);
  std::vector<int32_t> startRows(heads);
  for (uint32_t h = 0; h < heads; ++h) {
    Stream& s = seq->stream(layer, heads, h);
    oldSizes[h] = s.blocks.size();
    if (s.length % B != 0 && pool_.refCount(s.blocks.back()) > 1) {
      sharedLast[h] = s.blocks.back();
      cowSrc.push_back(s.blocks.back());
      cowDst.push_back(fresh[next]);
      s.blocks.back() = fresh[next++];
    }
    const uint32_t add = blocksFor(s.length + static_cast<int64_t>(input.tokens), B) - blocksFor(s.length, B);
    for (uint32_t i = 0; i < add; ++i) s.blocks.push_back(fresh[next++]);
    // Rows are appended to the tier-0 run; aged runs hold whole multiples of blockSize rows,
    // so the arithmetic above on the whole stream holds for the run too.
    tables[h] = s.blocks.data() + agedBlocks(s);
    startRows[h] = s.length - agedRows(s);
  }
  auto rollback = [&](const Status& status) {
    for (uint32_t h = 0; h < heads; ++h) {
      Stream& s = seq->stream(layer, heads, h);
      s.blocks.resize(oldSizes[h]);
      if (sharedLast[h] >= 0) s.blocks.back() = sharedLast[h];
    }
    for (int32_t b : fresh) pool_.release(b);
    return status;
  };
  if (!cowSrc.empty()) {
    const Status status = backend_->copyBlocks(pool(), cowSrc.data(), cowDst.data(), static_cast<uint32_t>(cowSrc.size()));
    if (!status.isOk()) return rollback(status);
  }

  AppendParams p;
  p.pool = pool();
  p.codec = codec();
  p.streamCount = heads;
  p.tokens = input.tokens;
  p.blockTables = tables.data();
  p.startRow = startRows.data();
  p.inputType = input.type;
  p.keys = input.keys;
  p.values = input.values;
  p.positions = positions;
  Status status = backend_->append(p);
  if (status.isOk()) status = summarizeAppended(tables.data(), startRows.data(), heads, input.tokens);
  if (!status.isOk()) return rollback(status);

  // Commit: nothing below can fail.
  for (uint32_t h = 0; h < heads; ++h) {
    Stream& s = seq->stream(layer, heads, h);
    if (sharedLast[h] >= 0) pool_.release(sharedLast[h]);  // the shared block keeps its other owners
    s.length += static_cast<int32_t>(input.tokens);
    if (!s.scores.empty()) s.scores.resize(s.length, 0.0f);
  }
  seq->nextPosition[layer] = positions[input.tokens - 1] + 1;
  if (config_.tiered()) ageStreams(seq, layer);
  return Status::ok();
}

Status Cache::attention(const uint64_t* ids, uint32_t count, const AttentionRequest& r) {
  KVC_RETURN_IF_ERROR(checkLayer(r.layer));
  KVC_RETURN_IF_ERROR(checkSparse(r.sparse));
  if (r.tq == 0) return shapeMismatch("attention needs at least one query token");
  if (r.sparse.tokens != 0 && r.rankPositions) {
    // The key summaries hold keys after RoPE at their stored positions; re-indexed positions
    // would move every key, so their bounds would not hold.
    return unsupported("sparse decode with positions: 'rank' is not supported: use positions as stored");
  }
  if (r.rankPositions && config_.ropeDims == 0) {
    return invalidArgument("positions: 'rank' re-indexes RoPE positions and needs the cache option rope");
  }
  const uint32_t heads = config_.kvHeads;
  int32_t longest = 0;
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq;
    KVC_RETURN_IF_ERROR(find(ids[i], &seq));
    if (seq->busy) return busy("the sequence is being compacted");
    for (uint32_t h = 0; h < heads; ++h) {
      const Stream& s = seq->stream(r.layer, heads, h);
      if (s.rows() < static_cast<int32_t>(r.tq)) {
        return shapeMismatch("attention with " + std::to_string(r.tq) + " query tokens needs at least that many rows; layer " +
                             std::to_string(r.layer) + " kv head " + std::to_string(h) + " holds " + std::to_string(s.rows()));
      }
      longest = std::max(longest, s.rows());
    }
  }
  if (!allFiniteF32(r.queries, static_cast<uint64_t>(count) * r.tq * config_.queryHeads * config_.headDim)) {
    return invalidArgument("queries must be finite: they hold NaN or Infinity");
  }
  // Attention mass keeps every logit of a call ([queries][rows] per stream) until the final
  // log-sum-exp is known; split long prefills into query chunks so that stays near 64 MiB.
  uint32_t chunk = r.tq;
  if (r.accumulateScores) {
    const uint64_t perToken = 4ull * config_.queriesPerHead() * static_cast<uint64_t>(longest) * heads * count;
    chunk = static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(r.tq, (uint64_t{64} << 20) / std::max<uint64_t>(perToken, 1))));
  }
  for (uint32_t t0 = 0; t0 < r.tq; t0 += chunk) {
    KVC_RETURN_IF_ERROR(attentionChunk(ids, count, r, t0, std::min(r.tq, t0 + chunk)));
  }
  if (r.recordQueries) {
    const uint64_t tokenStride = static_cast<uint64_t>(config_.queryHeads) * config_.headDim;
    // With rope a logged query keeps the stored position of its token (compaction rotates it
    // by that position); read every stream's first, so that a failed read logs nothing.
    std::vector<int32_t> tokenPositions;
    if (config_.ropeDims != 0) {
      tokenPositions.resize(static_cast<size_t>(count) * heads * r.tq);
      for (uint32_t i = 0; i < count; ++i) {
        const Sequence* seq = sequences_.at(ids[i]).get();
        for (uint32_t h = 0; h < heads; ++h) {
          const Stream& s = seq->stream(r.layer, heads, h);
          int32_t* out = tokenPositions.data() + (static_cast<size_t>(i) * heads + h) * r.tq;
          const uint32_t first = static_cast<uint32_t>(s.rows()) - r.tq;
          if (s.pendingRows() > 0) {
            std::memcpy(out, s.pendingPositions.data() + first, 4ull * r.tq);  // a calibrating low-rank stream
          } else {
            KVC_RETURN_IF_ERROR(readPositions(s, first, r.tq, out));
          }
        }
      }
    }
    for (uint32_t i = 0; i < count; ++i) {
      Sequence* seq = sequences_.at(ids[i]).get();
      for (uint32_t h = 0; h < heads; ++h) {
        Stream& s = seq->stream(r.layer, heads, h);
        const float* q = r.queries + static_cast<uint64_t>(i) * r.tq * tokenStride + static_cast<uint64_t>(h) * config_.queriesPerHead() * config_.headDim;
        const int32_t* pos = tokenPositions.empty() ? nullptr : tokenPositions.data() + (static_cast<size_t>(i) * heads + h) * r.tq;
        if (config_.lowRank()) {
          recordQueriesLowRank(s, r.layer * heads + h, q, r.tq, tokenStride, pos);
        } else {
          recordQueries(s, r.layer * heads + h, q, r.tq, tokenStride, config_.headDim, pos);
        }
      }
    }
  }
  return Status::ok();
}

// Query tokens [t0, t1) of the request; with the whole range, the backend derives the causal
// cutoffs itself, otherwise they are the positions of rows length - tq + t.
Status Cache::attentionChunk(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1) {
  if (config_.lowRank()) return attentionChunkLowRank(ids, count, r, t0, t1);
  if (config_.tiered()) return attentionChunkTiered(ids, count, r, t0, t1);
  const uint32_t heads = config_.kvHeads;
  const uint32_t D = config_.headDim;
  const uint32_t g = config_.queriesPerHead();
  const uint32_t tq = t1 - t0;
  const bool whole = t0 == 0 && t1 == r.tq;
  const uint64_t tokenStride = static_cast<uint64_t>(config_.queryHeads) * D;
  const uint64_t seqStride = tokenStride * r.tq;
  attentionScratch_.resize(static_cast<size_t>(count) * heads);
  // RoPE by stored position needs each query's position on the host (the backend rotates the
  // queries before the kernels run), so the cutoffs are read here then.
  const bool explicitPositions = !whole || (config_.ropeDims != 0 && !r.rankPositions);
  if (explicitPositions) queryPositionScratch_.resize(static_cast<size_t>(count) * heads * tq);
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq = sequences_.at(ids[i]).get();
    for (uint32_t h = 0; h < heads; ++h) {
      Stream& s = seq->stream(r.layer, heads, h);
      const size_t k = static_cast<size_t>(i) * heads + h;
      AttentionStream& a = attentionScratch_[k];
      a = AttentionStream();
      a.kv.blockTable = s.blocks.data();
      a.kv.length = s.length;
      a.queries = r.queries + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      a.out = r.out + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      a.lse = r.lse ? r.lse + (static_cast<uint64_t>(i) * r.tq + t0) * config_.queryHeads + static_cast<uint64_t>(h) * g : nullptr;
      if (r.accumulateScores) {
        if (s.scores.size() != static_cast<size_t>(s.length)) s.scores.resize(s.length, 0.0f);
        a.scores = s.scores.data();
      }
      a.firstQueryRow = s.length - static_cast<int32_t>(r.tq) + static_cast<int32_t>(t0);
      if (explicitPositions) {
        int32_t* qp = queryPositionScratch_.data() + k * tq;
        KVC_RETURN_IF_ERROR(readPositions(s, static_cast<uint32_t>(s.length) - r.tq + t0, tq, qp));
        a.queryPositions = qp;
      }
    }
  }
  AttentionParams p;
  p.pool = pool();
  p.codec = codec();
  p.streamCount = count * heads;
  p.streams = attentionScratch_.data();
  p.queriesPerHead = g;
  p.tq = tq;
  p.tokenStride = tokenStride;
  p.lseTokenStride = config_.queryHeads;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  // Keys stored before RoPE are rotated into f32 rows, so there are no stored integers to
  // score: precision 'fast' computes exactly with rope (docs/fast-precision.md).
  p.fast = config_.ropeDims == 0 && (r.precision < 0 ? config_.fastPrecision : r.precision == 1);
  p.rope.spec = config_.rope();
  p.rope.spec.byRank = r.rankPositions;
  if (r.sparse.tokens == 0) return backend_->attention(p);
  KVC_RETURN_IF_ERROR(sparse_.plan(*backend_, p.pool, p.codec, attentionScratch_.data(), p.streamCount, g, tq, tokenStride,
                                   p.scale, r.sparse, p.rope.spec));
  KVC_RETURN_IF_ERROR(backend_->attention(p));
  sparse_.finish();
  return Status::ok();
}

void Cache::recordQueries(Stream& stream, uint32_t streamIndex, const float* queries, uint32_t tq, uint64_t tokenStride,
                          uint32_t D, const int32_t* positions) {
  const uint32_t g = config_.queriesPerHead();
  QueryLog& log = stream.queries;
  for (uint32_t t = 0; t < tq; ++t) {
    for (uint32_t gi = 0; gi < g; ++gi) {
      const float* q = queries + t * tokenStride + static_cast<uint64_t>(gi) * D;
      if (config_.queryReservoir > 0) {
        size_t slot = SIZE_MAX;
        if (log.seen < config_.queryReservoir) {
          slot = log.seen;
          log.reservoir.resize((log.seen + 1) * D);
          if (positions) log.reservoirPositions.resize(log.seen + 1);
        } else {
          // Algorithm R with a counter-based generator: deterministic for a given history.
          uint64_t state = (log.seen << 20) ^ streamIndex ^ 0x5DEECE66Dull;
          const uint64_t j = splitmix64(&state) % (log.seen + 1);
          if (j < config_.queryReservoir) slot = j;
        }
        if (slot != SIZE_MAX) {
          std::memcpy(log.reservoir.data() + slot * D, q, 4ull * D);
          if (positions) log.reservoirPositions[slot] = positions[t];
        }
        ++log.seen;
      }
      if (config_.recentQueries > 0) {
        const size_t slot = log.recentSeen % config_.recentQueries;
        if (log.recent.size() < (slot + 1) * D) log.recent.resize((slot + 1) * D);
        std::memcpy(log.recent.data() + slot * D, q, 4ull * D);
        if (positions) {
          if (log.recentPositions.size() < slot + 1) log.recentPositions.resize(slot + 1);
          log.recentPositions[slot] = positions[t];
        }
        ++log.recentSeen;
      }
    }
  }
}

Status Cache::resetScores(uint64_t id) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  for (Stream& s : seq->streams) std::fill(s.scores.begin(), s.scores.end(), 0.0f);
  return Status::ok();
}

const Sequence* Cache::sequence(uint64_t id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

Sequence* Cache::mutableSequence(uint64_t id) {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

Status Cache::readPositions(const Stream& stream, uint32_t start, uint32_t count, int32_t* out) const {
  return readStreamRows(stream, start, count, nullptr, nullptr, nullptr, out);
}

Status Cache::truncate(uint64_t id, int32_t position) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  if (seq->busy) return busy("the sequence is being compacted");
  if (position < 0) return invalidArgument("truncate position must be >= 0");
  const uint32_t B = config_.blockSize;
  // Find every stream's new length first (reading positions may fail on a device backend).
  std::vector<int32_t> newLengths(seq->streams.size());
  std::vector<int32_t> tail;
  for (size_t i = 0; i < seq->streams.size(); ++i) {
    const Stream& s = seq->streams[i];
    int32_t len = s.length;
    while (len > 0) {
      const uint32_t chunk = static_cast<uint32_t>(std::min<int32_t>(len, 256));
      tail.resize(chunk);
      KVC_RETURN_IF_ERROR(readPositions(s, static_cast<uint32_t>(len) - chunk, chunk, tail.data()));
      uint32_t k = chunk;
      while (k > 0 && tail[k - 1] >= position) --k;
      len -= static_cast<int32_t>(chunk - k);
      if (k > 0) break;
    }
    newLengths[i] = len;
  }
  // Tiered streams: plan every cut first (a cut inside an aged block is refused).
  std::vector<uint32_t> tierKeep(config_.tiered() ? seq->streams.size() : 0);
  std::vector<std::vector<uint32_t>> tierTables(tierKeep.size());
  for (size_t i = 0; i < tierKeep.size(); ++i) {
    KVC_RETURN_IF_ERROR(planTierTruncate(seq->streams[i], newLengths[i], &tierKeep[i], &tierTables[i]));
  }
  for (size_t i = 0; i < seq->streams.size(); ++i) {
    Stream& s = seq->streams[i];
    const uint32_t keep = config_.tiered() ? tierKeep[i] : blocksFor(newLengths[i], B);
    if (config_.tiered()) s.tierBlocks = tierTables[i];
    const bool cut = newLengths[i] < s.length;
    for (size_t b = keep; b < s.blocks.size(); ++b) pool_.release(s.blocks[b]);
    s.blocks.resize(keep);
    s.length = newLengths[i];
    // A calibrating low-rank stream holds its rows in order by position, off the pool.
    size_t pending = s.pendingPositions.size();
    while (pending > 0 && s.pendingPositions[pending - 1] >= position) --pending;
    s.pendingPositions.resize(pending);
    s.held.truncate(pending, config_.headDim);
    if (!s.scores.empty()) s.scores.resize(s.rows());
    if (!seq->intact.empty()) seq->intact[i] = std::min(seq->intact[i], s.length);
    // A cut block's summary still bounds its remaining rows; recomputing tightens it, but only
    // when no fork still reads the rows beyond the cut (best effort: the old one stays valid).
    if (cut && s.length % B != 0 && pool_.refCount(s.blocks.back()) == 1) {
      (void)refreshSummaries(s.blocks.data(), s.length, keep - 1, keep);
    }
  }
  for (int32_t& next : seq->nextPosition) next = std::min(next, position);
  return Status::ok();
}

Status Cache::read(uint64_t id, uint32_t layer, uint32_t head, RowsOut* out) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  KVC_RETURN_IF_ERROR(checkLayer(layer));
  if (head >= config_.kvHeads) {
    return invalidArgument("kvHead " + std::to_string(head) + " is out of range [0, " + std::to_string(config_.kvHeads) + ")");
  }
  const Stream& s = seq->stream(layer, config_.kvHeads, head);
  if (config_.lowRank()) return readLowRank(s, out);
  const size_t n = static_cast<size_t>(s.length);
  out->keys.resize(n * config_.headDim);
  out->values.resize(n * config_.headDim);
  out->beta.resize(n);
  out->positions.resize(n);
  if (n == 0) return Status::ok();
  return readStreamRows(s, 0, static_cast<uint32_t>(n), out->keys.data(), out->values.data(), out->beta.data(),
                        out->positions.data());
}

Status Cache::lengths(uint64_t id, uint32_t layer, int32_t* out) const {
  const Sequence* seq;
  KVC_RETURN_IF_ERROR(findConst(id, &seq));
  KVC_RETURN_IF_ERROR(checkLayer(layer));
  for (uint32_t h = 0; h < config_.kvHeads; ++h) out[h] = seq->stream(layer, config_.kvHeads, h).rows();
  return Status::ok();
}

Status Cache::nextPosition(uint64_t id, uint32_t layer, int32_t* out) const {
  const Sequence* seq;
  KVC_RETURN_IF_ERROR(findConst(id, &seq));
  KVC_RETURN_IF_ERROR(checkLayer(layer));
  *out = seq->nextPosition[layer];
  return Status::ok();
}

CacheStats Cache::stats() const {
  CacheStats st;
  st.sequences = sequences_.size();
  std::vector<const LowRankBasis*> counted;  // a basis shared by forks counts once
  for (const auto& [id, seq] : sequences_) {
    for (const Stream& s : seq->streams) {
      st.rows += static_cast<uint64_t>(s.rows());
      st.lowRankBytes += s.held.bytes() + 4ull * s.pendingPositions.size();
      if (s.basis) counted.push_back(s.basis.get());
    }
  }
  std::sort(counted.begin(), counted.end());
  counted.erase(std::unique(counted.begin(), counted.end()), counted.end());
  for (const LowRankBasis* b : counted) st.lowRankBytes += 4ull * (b->keys.size() + b->values.size());
  st.blocksUsed = pool_.used();
  st.blocksFree = pool_.available();
  st.blockBytes = blockFootprint(layout_);  // with the block's key-summary entry
  st.committedBytes = backend_->committedBytes();
  st.maxBytes = pool_.capacity() * blockFootprint(layout_);
  st.workspaceBytes = backend_->workspaceBytes() + hostScratchBytes();
  if (config_.tiered()) {
    // Per tier: distinct blocks (forks share them) and rows (of every sequence).
    std::vector<std::vector<int32_t>> ids(tiers_.size());
    st.tierRows.assign(tiers_.size(), 0);
    std::vector<TierRun> runs;
    for (const auto& [id, seq] : sequences_) {
      for (const Stream& s : seq->streams) {
        tierRuns(s, &runs);
        for (const TierRun& run : runs) {
          st.tierRows[run.tier] += static_cast<uint64_t>(run.rows);
          ids[run.tier].insert(ids[run.tier].end(), s.blocks.begin() + run.firstBlock, s.blocks.begin() + run.firstBlock + run.blocks);
        }
      }
    }
    for (auto& v : ids) {
      std::sort(v.begin(), v.end());
      st.tierBlocks.push_back(static_cast<uint64_t>(std::unique(v.begin(), v.end()) - v.begin()));
    }
  }
  return st;
}

}  // namespace kvc
