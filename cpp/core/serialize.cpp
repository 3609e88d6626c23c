// Export / import of one sequence (ARCHITECTURE §4.6). Little-endian layout:
//   header  "KVCSEQ01" | u32 version | u32 headerBytes | config fields (see writeHeader)
//   version 2: u32 rank (0: not low-rank); when rank > 0, per stream: u32 hasBases |
//     [f32 keyBasis[D][rank] | f32 valueBasis[D][rank]] | u32 held | f32 heldKeys[held][D] |
//     f32 heldValues[held][D] | i32 heldPositions[held]   (bases, or the rows still calibrating)
//   version 3: as version 2, with the rope fields (u32 dims, u32 style, f64 theta) right after
//     the config fields, for a cache with rope (keys stored before RoPE)
//   version 5: a low-rank cache whose key and value ranks differ: the rope fields always (dims 0:
//     keys after RoPE), then u32 keyRank | u32 valueRank, per stream: u32 hasBases |
//     [f32 keyBasis[D][keyRank] | f32 valueBasis[D][valueRank], absent when valueRank = D
//     (values stored unprojected)] | held rows as in version 2
//   i32 nextPosition[layers] | i32 length[layers * kvHeads]
//   per stream: keyRows[len][keyRowBytes] | valueRows[len][valueRowBytes] | f32 beta[len] | i32 positions[len]
//   u32 crc32 of everything before it
// Rows are stored encoded (bit-exact, quantized rows stay quantized); blocks are not:
// the importing cache may use another blockSize. Import trusts nothing but the bytes: after
// the checksum, every count is bounded by the bytes present before any allocation, and
// positions, beta and quantization scales are checked (CORRUPT_DATA otherwise).
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "cache.h"
#include "chunk_import.h"
#include "kvc/finite.h"
#include "crc32.h"
#include "tiers/tier_serialize.h"

namespace kvc {

namespace {

constexpr char kMagic[8] = {'K', 'V', 'C', 'S', 'E', 'Q', '0', '1'};
// 2 added the low-rank section; 3 adds the rope fields (a cache with rope writes 3, every
// other cache 2). Version 1 bytes (neither) still import.
constexpr uint32_t kFormatVersion = 2;
constexpr uint32_t kRopeFormatVersion = 3;
// 4 is the tiered layout (tiers/tier_serialize.cpp); 5 carries a value rank of its own.
constexpr uint32_t kRanksFormatVersion = 5;

struct HeaderFields {
  uint32_t layers, kvHeads, headDim, groupSize;
  uint32_t keyStorage, valueStorage, rotateKeys, rotateValues, rotationSeed;
  uint32_t keyRowBytes, valueRowBytes;
};
constexpr uint32_t kHeaderBytes = 8 + 4 + 4 + sizeof(HeaderFields);
static_assert(sizeof(HeaderFields) == 44, "export header fields are 11 u32");

struct RopeFields {
  uint32_t dims, style;
  double theta;
};
static_assert(sizeof(RopeFields) == 16, "rope fields: u32, u32, f64");
constexpr uint32_t kRopeHeaderBytes = kHeaderBytes + sizeof(RopeFields);

Status checksumMismatch() { return corruptData("checksum mismatch: the sequence bytes are damaged"); }

RopeFields ropeFieldsOf(const CacheConfig& c) { return RopeFields{c.ropeDims, c.ropeStyle, c.ropeTheta}; }

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>* out) : out_(out) {}
  void bytes(const void* p, size_t n) {
    const size_t at = out_->size();
    out_->resize(at + n);
    if (n) std::memcpy(out_->data() + at, p, n);
  }
  template <typename T> void value(T v) { bytes(&v, sizeof v); }
 private:
  std::vector<uint8_t>* out_;
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool bytes(void* dst, size_t n) {
    if (n > n_ - at_) return false;
    if (n) std::memcpy(dst, p_ + at_, n);
    at_ += n;
    return true;
  }
  const uint8_t* take(size_t n) {
    if (n > n_ - at_) return nullptr;
    const uint8_t* p = p_ + at_;
    at_ += n;
    return p;
  }
  size_t remaining() const { return n_ - at_; }
  size_t offset() const { return at_; }
 private:
  const uint8_t* p_;
  size_t n_;
  size_t at_ = 0;
};

HeaderFields fieldsOf(const CacheConfig& c) {
  return HeaderFields{c.layers, c.kvHeads, c.headDim, c.groupSize,
                      static_cast<uint32_t>(c.keys), static_cast<uint32_t>(c.values),
                      c.rotateKeys ? 1u : 0u, c.rotateValues ? 1u : 0u, c.rotationSeed,
                      c.keyRowBytes(), c.valueRowBytes()};
}

// The f16 parameters of one encoded row (int8: a scale per group; int4: a scale and a
// minimum per group) are finite; plain formats have none.
bool rowParamsFinite(Storage s, const uint8_t* row, uint32_t D, uint32_t G) {
  uint32_t offset = 0, count = 0;
  if (s == Storage::kInt8) {
    offset = D, count = D / G;
  } else if (s == Storage::kInt4) {
    offset = D / 2, count = 2 * (D / G);
  }
  for (uint32_t i = 0; i < count; ++i) {
    uint16_t h;
    std::memcpy(&h, row + offset + 2 * i, 2);
    if ((h & 0x7C00u) == 0x7C00u) return false;  // exponent all ones: Inf or NaN
  }
  return true;
}

// The elements of n plain rows (f32, f16, bf16; contiguous in the export) are finite:
// append never stores anything else (non-finite inputs are rejected, f16 / bf16 saturate),
// so neither may an import. Quantized rows hold codes, finite whenever their scales are.
// One branch-free pass per region, which the compiler vectorizes.
bool plainRowsFinite(Storage s, const uint8_t* rows, uint64_t n, uint32_t D) {
  const uint64_t count = n * D;
  if (s == Storage::kF32) return allFiniteF32(reinterpret_cast<const float*>(rows), count);
  if (s != Storage::kF16 && s != Storage::kBF16) return true;
  const uint16_t mask = s == Storage::kF16 ? 0x7C00u : 0x7F80u;
  uint32_t bad = 0;
  for (uint64_t i = 0; i < count; ++i) {
    uint16_t bits;
    std::memcpy(&bits, rows + 2 * i, 2);
    bad |= (bits & mask) == mask;
  }
  return bad == 0;
}

// Sanity of the rows an import would store, checked before anything is allocated: what
// append and compaction can produce (positions in [0, 2^31 - 2], finite beta, finite
// elements and quantization parameters). The reader is not advanced. Positions need not ascend: append
// accepts any non-negative positions the engine gives. With crc, each stream's bytes are also
// added to the running checksum *crc just before they are checked, so one pass from memory
// serves both (a stream's rows are a few MB at most: they are still in cache for the checks).
Status validateRows(const CacheConfig& c, const std::vector<int32_t>& lengths, Reader r, uint32_t* crc = nullptr) {
  const uint32_t kb = c.keyRowBytes(), vb = c.valueRowBytes();
  for (size_t i = 0; i < lengths.size(); ++i) {
    const uint32_t n = static_cast<uint32_t>(lengths[i]);
    const uint8_t* k = r.take(static_cast<size_t>(n) * kb);
    const uint8_t* v = r.take(static_cast<size_t>(n) * vb);
    const uint8_t* b = r.take(4ull * n);
    const uint8_t* p = r.take(4ull * n);
    if (crc) *crc = crc32Update(*crc, k, static_cast<size_t>(n) * (kb + vb + 8));
    auto where = [i] { return " in stream " + std::to_string(i); };
    if (!plainRowsFinite(c.keys, k, n, c.storedDim()) || !plainRowsFinite(c.values, v, n, c.valueStoredDim())) {
      return corruptData("non-finite key or value" + where());
    }
    for (uint32_t j = 0; j < n; ++j) {
      float beta;
      int32_t position;
      std::memcpy(&beta, b + 4ull * j, 4);
      std::memcpy(&position, p + 4ull * j, 4);
      if (!std::isfinite(beta)) return corruptData("non-finite beta" + where());
      if (position < 0 || position == INT32_MAX) return corruptData("position out of range [0, 2^31 - 2]" + where());
      const uint8_t* key = k + static_cast<size_t>(j) * kb;
      const uint8_t* value = v + static_cast<size_t>(j) * vb;
      if (!rowParamsFinite(c.keys, key, c.storedDim(), c.groupSize) || !rowParamsFinite(c.values, value, c.valueStoredDim(), c.groupSize)) {
        return corruptData("non-finite quantization scale" + where());
      }
    }
  }
  return Status::ok();
}

}  // namespace

// Shared with version 4, the format of caches with tiers (tiers/tier_serialize.cpp).
void writeSequenceHeader(const CacheConfig& c, uint32_t version, uint32_t headerBytes, std::vector<uint8_t>* out) {
  Writer w(out);
  w.bytes(kMagic, 8);
  w.value(version);
  w.value(headerBytes);
  const HeaderFields fields = fieldsOf(c);
  w.bytes(&fields, sizeof fields);
}

uint32_t sequenceHeaderBytes() { return kHeaderBytes; }

Status checkSequenceFields(const CacheConfig& c, const uint8_t* fields) {
  HeaderFields f;
  std::memcpy(&f, fields, sizeof f);
  const HeaderFields mine = fieldsOf(c);
  if (f.layers != mine.layers || f.kvHeads != mine.kvHeads || f.headDim != mine.headDim) {
    return shapeMismatch("the sequence has " + std::to_string(f.layers) + " layers x " + std::to_string(f.kvHeads) +
                         " kv heads x headDim " + std::to_string(f.headDim) + "; this cache has " +
                         std::to_string(mine.layers) + " x " + std::to_string(mine.kvHeads) + " x " + std::to_string(mine.headDim));
  }
  if (std::memcmp(&f, &mine, sizeof f) != 0) {
    return invalidArgument("the sequence was exported with other storage formats, groupSize or rotation than this cache uses");
  }
  return Status::ok();
}

Status validateEncodedRows(const CacheConfig& c, const std::vector<int32_t>& lengths, const uint8_t* bytes, size_t size, uint32_t* crc) {
  return validateRows(c, lengths, Reader(bytes, size), crc);
}

Status checkPlainPrelude(const CacheConfig& c, const uint8_t* p, size_t n) {
  if (n < kHeaderBytes || std::memcmp(p, kMagic, 8) != 0) return corruptData("not a kvcompact sequence (bad magic)");
  uint32_t version = 0, headerBytes = 0;
  std::memcpy(&version, p + 8, 4);
  std::memcpy(&headerBytes, p + 12, 4);
  if (version != 1 && version != kFormatVersion && version != kRopeFormatVersion) {
    return corruptData("a chunk of sequence format version " + std::to_string(version) + " (chunks are versions 1-3)");
  }
  const bool hasRopeFields = version == kRopeFormatVersion;
  if (headerBytes != (hasRopeFields ? kRopeHeaderBytes : kHeaderBytes)) return corruptData("bad header size");
  if (n != headerBytes + (version >= 2 ? 4u : 0u)) return corruptData("bad chunk prelude size");
  KVC_RETURN_IF_ERROR(checkSequenceFields(c, p + 16));
  RopeFields rf{0, 0, 0.0};
  if (hasRopeFields) std::memcpy(&rf, p + kHeaderBytes, sizeof rf);
  const RopeFields mine = ropeFieldsOf(c);
  if (rf.dims != mine.dims || rf.style != mine.style || !(rf.theta == mine.theta)) {
    return invalidArgument("the sequence was exported with other rope options than this cache uses");
  }
  uint32_t rank = 0;
  if (version >= 2) std::memcpy(&rank, p + headerBytes, 4);
  if (rank != 0 || c.lowRank()) return invalidArgument("chunks hold plain rows: a lowRank sequence is imported whole");
  return Status::ok();
}

Status Cache::exportSequence(uint64_t id, std::vector<uint8_t>* out) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  if (seq->busy) return busy("the sequence is being compacted");
  if (config_.tiered()) return exportTiered(*seq, out);
  const bool ranks = config_.storedDim() != config_.valueStoredDim();  // version 5
  const bool rope = config_.ropeDims != 0;
  uint64_t total = kHeaderBytes + 4ull * (config_.layers + seq->streams.size()) + 4;
  const uint64_t perRow = config_.keyRowBytes() + config_.valueRowBytes() + 8ull;
  for (const Stream& s : seq->streams) total += perRow * static_cast<uint64_t>(s.length);
  if (rope || ranks) total += sizeof(RopeFields);
  out->clear();
  out->reserve(total);
  Writer w(out);
  w.bytes(kMagic, 8);
  w.value(ranks ? kRanksFormatVersion : rope ? kRopeFormatVersion : kFormatVersion);
  w.value(rope || ranks ? kRopeHeaderBytes : kHeaderBytes);
  const HeaderFields fields = fieldsOf(config_);
  w.bytes(&fields, sizeof fields);
  if (rope || ranks) {
    const RopeFields rf = ropeFieldsOf(config_);
    w.bytes(&rf, sizeof rf);
  }
  const uint32_t rank = config_.lowRank() ? config_.storedDim() : 0;
  w.value(rank);
  if (ranks) w.value(config_.valueStoredDim());
  if (rank > 0) {
    std::vector<float> heldKeys, heldValues;
    for (const Stream& s : seq->streams) {
      w.value(s.basis ? 1u : 0u);
      if (s.basis) {
        w.bytes(s.basis->keys.data(), 4 * s.basis->keys.size());
        w.bytes(s.basis->values.data(), 4 * s.basis->values.size());  // empty for unprojected values
      }
      // Held rows are written as f32 (binary16 rows widen exactly).
      const uint32_t held = static_cast<uint32_t>(s.pendingRows());
      w.value(held);
      heldKeys.resize(static_cast<size_t>(held) * config_.headDim);
      heldValues.resize(heldKeys.size());
      s.held.read(held, config_.headDim, heldKeys.data(), heldValues.data());
      w.bytes(heldKeys.data(), 4 * heldKeys.size());
      w.bytes(heldValues.data(), 4 * heldValues.size());
      w.bytes(s.pendingPositions.data(), 4 * s.pendingPositions.size());
    }
  }
  w.bytes(seq->nextPosition.data(), 4 * seq->nextPosition.size());
  for (const Stream& s : seq->streams) w.value(s.length);
  std::vector<uint8_t> keys, values;
  std::vector<float> beta;
  std::vector<int32_t> positions;
  for (const Stream& s : seq->streams) {
    const uint32_t n = static_cast<uint32_t>(s.length);
    keys.resize(static_cast<size_t>(n) * config_.keyRowBytes());
    values.resize(static_cast<size_t>(n) * config_.valueRowBytes());
    beta.resize(n);
    positions.resize(n);
    if (n) {
      StreamView view{s.blocks.data(), s.length};
      KVC_RETURN_IF_ERROR(backend_->readRawRows(pool(), view, 0, n, keys.data(), values.data(), beta.data(), positions.data()));
    }
    w.bytes(keys.data(), keys.size());
    w.bytes(values.data(), values.size());
    w.bytes(beta.data(), 4ull * n);
    w.bytes(positions.data(), 4ull * n);
  }
  w.value(crc32(out->data(), out->size()));
  return Status::ok();
}

Status Cache::importSequence(const uint8_t* bytes, size_t size, uint64_t* id) {
  if (size < kHeaderBytes + 4) return corruptData("sequence bytes are too short (" + std::to_string(size) + " bytes)");
  if (std::memcmp(bytes, kMagic, 8) != 0) return corruptData("not a kvcompact sequence (bad magic)");
  uint32_t stored;
  std::memcpy(&stored, bytes + size - 4, 4);
  // The checksum is computed in the pass that checks the rows; a failure before it was
  // compared checks the whole checksum first, so damaged bytes are always reported as damaged.
  bool checksumChecked = false;
  const Status status = importChecked(bytes, size, stored, &checksumChecked, id);
  if (!status.isOk() && !checksumChecked && crc32(bytes, size - 4) != stored) return checksumMismatch();
  return status;
}

Status Cache::importChecked(const uint8_t* bytes, size_t size, uint32_t stored, bool* checksumChecked, uint64_t* id) {
  Reader r(bytes, size - 4);
  r.take(8);
  uint32_t version = 0, headerBytes = 0;
  r.bytes(&version, 4);
  r.bytes(&headerBytes, 4);
  if (version == kTieredFormatVersion) {
    // The tiered layout is read by importTiered, which expects verified bytes: its checksum
    // is a pass of its own.
    *checksumChecked = true;
    if (crc32(bytes, size - 4) != stored) return checksumMismatch();
    return importTiered(bytes, size, id);
  }
  if (version != 1 && version != kFormatVersion && version != kRopeFormatVersion && version != kRanksFormatVersion) {
    return corruptData("unsupported sequence format version " + std::to_string(version));
  }
  const bool hasRopeFields = version == kRopeFormatVersion || version == kRanksFormatVersion;
  if (headerBytes != (hasRopeFields ? kRopeHeaderBytes : kHeaderBytes)) return corruptData("bad header size");
  HeaderFields f;
  r.bytes(&f, sizeof f);
  RopeFields rf{0, 0, 0.0};  // versions 1 and 2: keys after RoPE
  if (hasRopeFields && !r.bytes(&rf, sizeof rf)) return corruptData("truncated sequence bytes");
  const HeaderFields mine = fieldsOf(config_);
  if (f.layers != mine.layers || f.kvHeads != mine.kvHeads || f.headDim != mine.headDim) {
    return shapeMismatch("the sequence has " + std::to_string(f.layers) + " layers x " + std::to_string(f.kvHeads) +
                         " kv heads x headDim " + std::to_string(f.headDim) + "; this cache has " +
                         std::to_string(mine.layers) + " x " + std::to_string(mine.kvHeads) + " x " + std::to_string(mine.headDim));
  }
  if (std::memcmp(&f, &mine, sizeof f) != 0) {
    return invalidArgument("the sequence was exported with other storage formats, groupSize or rotation than this cache uses");
  }
  const RopeFields myRope = ropeFieldsOf(config_);
  if (rf.dims != myRope.dims || rf.style != myRope.style || !(rf.theta == myRope.theta)) {
    return invalidArgument(std::string("the sequence was exported ") +
                           (rf.dims ? "with keys before RoPE (rope " + std::to_string(rf.dims) + " dims, theta " + std::to_string(rf.theta) + ")"
                                    : "with keys after RoPE") +
                           "; this cache " + (myRope.dims ? "has other rope options" : "expects keys after RoPE (no rope option)"));
  }
  // The low-rank section (versions 2, 3 and 5): bounded by the bytes present, bases finite and
  // orthonormal, held rows finite with valid positions. Before version 5 one rank serves both.
  const uint32_t myRank = config_.lowRank() ? config_.storedDim() : 0;
  const uint32_t myValueRank = config_.lowRank() ? config_.valueStoredDim() : 0;
  uint32_t rank = 0;
  if (version >= 2 && !r.bytes(&rank, 4)) return corruptData("truncated sequence bytes");
  uint32_t valueRank = rank;
  if (version == kRanksFormatVersion && !r.bytes(&valueRank, 4)) return corruptData("truncated sequence bytes");
  if (version == kRanksFormatVersion && (rank == 0 || rank == valueRank)) return corruptData("bad low-rank section");
  if (rank != myRank || valueRank != myValueRank) {
    return invalidArgument("the sequence was exported with lowRank ranks " + std::to_string(rank) + " (keys), " +
                           std::to_string(valueRank) + " (values); this cache uses " + std::to_string(myRank) + ", " +
                           std::to_string(myValueRank));
  }
  // Columns of the stored value basis: none when values are kept unprojected.
  const uint32_t valueCols = config_.fullValues() ? 0 : valueRank;
  struct LowRankPart {
    const uint8_t* bases = nullptr;  // keys [D][rank] then values [D][valueCols], f32
    uint32_t held = 0;
    const uint8_t* heldRows = nullptr;  // keys [held][D], values [held][D], positions [held]
  };
  std::vector<LowRankPart> lowRank(rank > 0 ? config_.streamsPerSequence() : 0);
  const uint64_t D = config_.headDim;
  for (size_t i = 0; i < lowRank.size(); ++i) {
    uint32_t has = 0;
    if (!r.bytes(&has, 4) || has > 1) return corruptData("bad low-rank section");
    if (has) {
      lowRank[i].bases = r.take(4ull * D * (rank + valueCols));
      if (!lowRank[i].bases) return corruptData("truncated sequence bytes");
      std::vector<float> b(D * (rank + valueCols));
      std::memcpy(b.data(), lowRank[i].bases, 4 * b.size());
      if (!allFiniteF32(b.data(), b.size())) return corruptData("non-finite low-rank basis in stream " + std::to_string(i));
      for (int part = 0; part < 2; ++part) {
        const uint32_t cols = part == 0 ? rank : valueCols;
        const float* m = b.data() + part * D * rank;
        for (uint32_t x = 0; x < cols; ++x) {
          for (uint32_t y = x; y < cols; ++y) {
            double dot = 0.0;
            for (uint64_t d = 0; d < D; ++d) dot += static_cast<double>(m[d * cols + x]) * m[d * cols + y];
            if (std::fabs(dot - (x == y ? 1.0 : 0.0)) > 1e-3) return corruptData("low-rank basis not orthonormal in stream " + std::to_string(i));
          }
        }
      }
    }
    if (!r.bytes(&lowRank[i].held, 4)) return corruptData("truncated sequence bytes");
    if (has && lowRank[i].held > 0) return corruptData("a stream with bases holds no calibration rows");
    if (lowRank[i].held > r.remaining() / (8 * D + 4)) return corruptData("truncated sequence bytes");
    lowRank[i].heldRows = r.take((8 * D + 4) * lowRank[i].held);
    const uint32_t n = lowRank[i].held;
    std::vector<float> rows(2ull * n * D);
    std::memcpy(rows.data(), lowRank[i].heldRows, 4 * rows.size());
    if (!allFiniteF32(rows.data(), rows.size())) return corruptData("non-finite calibration row in stream " + std::to_string(i));
    for (uint32_t j = 0; j < n; ++j) {
      int32_t position;
      std::memcpy(&position, lowRank[i].heldRows + 8 * D * n + 4ull * j, 4);
      if (position < 0 || position == INT32_MAX) return corruptData("position out of range [0, 2^31 - 2]");
    }
  }
  // The tables go into plain arrays first: the Sequence (an object per stream) is built only
  // from bytes that passed every check, so a crafted header costs 4 bytes per stream.
  std::vector<int32_t> nextPositions(config_.layers), lengths(config_.streamsPerSequence());
  if (!r.bytes(nextPositions.data(), 4ull * config_.layers)) return corruptData("truncated sequence bytes");
  for (int32_t next : nextPositions) {
    if (next < 0) return corruptData("negative next position");
  }
  // Every count is bounded by the bytes that back it before it is added or used, in 64-bit
  // arithmetic: no sum can wrap around, and nothing below allocates more than the input holds.
  const uint64_t perRow = config_.keyRowBytes() + config_.valueRowBytes() + 8ull;
  uint64_t rowBytesTotal = 0;
  uint64_t blocksNeeded = 0;
  for (int32_t& length : lengths) {
    if (!r.bytes(&length, 4)) return corruptData("truncated sequence bytes");
    if (length < 0) return corruptData("negative stream length");
    const uint64_t bytes = perRow * static_cast<uint64_t>(length);  // < 2^31 * 2^14
    if (rowBytesTotal > r.remaining() || bytes > r.remaining() - rowBytesTotal) {
      return corruptData("the stream lengths declare more rows than the sequence bytes hold");
    }
    rowBytesTotal += bytes;
    blocksNeeded += (static_cast<uint64_t>(length) + config_.blockSize - 1) / config_.blockSize;
  }
  if (rowBytesTotal != r.remaining()) return corruptData("sequence bytes do not match the stream lengths they declare");
  if (blocksNeeded > INT32_MAX) return outOfMemory("the sequence needs more than 2^31 blocks");
  for (size_t i = 0; i < lowRank.size(); ++i) {
    if (!lowRank[i].bases && lengths[i] > 0) return corruptData("a low-rank stream with rows in blocks has no bases");
  }
  // Header and tables, then every stream's rows as they are checked: all size - 4 bytes.
  uint32_t crc = crc32(bytes, r.offset());
  KVC_RETURN_IF_ERROR(validateRows(config_, lengths, r, &crc));
  *checksumChecked = true;
  if (crc != stored) return checksumMismatch();
  auto seq = std::make_unique<Sequence>();
  seq->streams.resize(lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) seq->streams[i].length = lengths[i];
  seq->nextPosition = std::move(nextPositions);
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(static_cast<uint32_t>(blocksNeeded), &fresh));
  size_t next = 0;
  for (Stream& s : seq->streams) {
    const uint32_t n = static_cast<uint32_t>(s.length);
    const uint32_t nb = (n + config_.blockSize - 1) / config_.blockSize;
    s.blocks.assign(fresh.begin() + next, fresh.begin() + next + nb);
    next += nb;
    const uint8_t* k = r.take(static_cast<size_t>(n) * config_.keyRowBytes());
    const uint8_t* v = r.take(static_cast<size_t>(n) * config_.valueRowBytes());
    const uint8_t* b = r.take(4ull * n);
    const uint8_t* p = r.take(4ull * n);
    if (n == 0) continue;
    StreamView view{s.blocks.data(), s.length};
    // Copy beta and positions out to aligned storage: the byte stream has no alignment.
    std::vector<float> beta(n);
    std::vector<int32_t> positions(n);
    std::memcpy(beta.data(), b, 4ull * n);
    std::memcpy(positions.data(), p, 4ull * n);
    Status status = backend_->writeRawRows(pool(), view, 0, n, k, v, beta.data(), positions.data());
    if (status.isOk()) status = refreshSummaries(s.blocks.data(), n, 0, nb);  // summaries are not exported
    if (!status.isOk()) {
      for (int32_t blk : fresh) pool_.release(blk);
      return status;
    }
  }
  for (size_t i = 0; i < lowRank.size(); ++i) {
    Stream& s = seq->streams[i];
    const LowRankPart& part = lowRank[i];
    if (part.bases) {
      auto basis = std::make_shared<LowRankBasis>();
      basis->keys.resize(D * rank);
      basis->values.resize(D * valueCols);
      std::memcpy(basis->keys.data(), part.bases, 4 * D * rank);
      std::memcpy(basis->values.data(), part.bases + 4 * D * rank, 4 * D * valueCols);
      s.basis = std::move(basis);
    }
    s.pendingPositions.resize(part.held);
    if (part.held) {
      // Held rows that are all binary16 values (what a cache holds) are held as binary16;
      // others (exports of caches that held f32 rows) stay f32, exactly as exported.
      std::vector<float> k(D * part.held), v(D * part.held);
      std::memcpy(k.data(), part.heldRows, 4 * D * part.held);
      std::memcpy(v.data(), part.heldRows + 4 * D * part.held, 4 * D * part.held);
      bool half = !heldF32();
      for (size_t e = 0; half && e < k.size(); ++e) half = halfToFloat(floatToHalf(k[e])) == k[e] && halfToFloat(floatToHalf(v[e])) == v[e];
      if (!half) s.held.widen(static_cast<uint32_t>(D));
      for (uint32_t j = 0; j < part.held; ++j) s.held.append(k.data() + j * D, v.data() + j * D, static_cast<uint32_t>(D));
      std::memcpy(s.pendingPositions.data(), part.heldRows + 8 * D * part.held, 4ull * part.held);
    }
  }
  // A cache with tiers imports the rows of versions 1-3 into its top tier and ages them now.
  for (uint32_t layer = 0; config_.tiered() && layer < config_.layers; ++layer) ageStreams(seq.get(), layer);
  seq->id = nextSequenceId_++;
  *id = seq->id;
  sequences_.emplace(seq->id, std::move(seq));
  return Status::ok();
}

}  // namespace kvc
