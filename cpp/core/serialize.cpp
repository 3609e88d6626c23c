// Export / import of one sequence (ARCHITECTURE §4.6). Little-endian layout:
//   header  "KVCSEQ01" | u32 version | u32 headerBytes | config fields (see writeHeader)
//   i32 nextPosition[layers] | i32 length[layers * kvHeads]
//   per stream: keyRows[len][keyRowBytes] | valueRows[len][valueRowBytes] | f32 beta[len] | i32 positions[len]
//   u32 crc32 of everything before it
// Rows are stored encoded (bit-exact, quantized rows stay quantized); blocks are not:
// the importing cache may use another blockSize.
#include <cstring>
#include <string>

#include "cache.h"
#include "crc32.h"

namespace kvc {

namespace {

constexpr char kMagic[8] = {'K', 'V', 'C', 'S', 'E', 'Q', '0', '1'};
constexpr uint32_t kFormatVersion = 1;

struct HeaderFields {
  uint32_t layers, kvHeads, headDim, groupSize;
  uint32_t keyStorage, valueStorage, rotateKeys, rotateValues, rotationSeed;
  uint32_t keyRowBytes, valueRowBytes;
};
constexpr uint32_t kHeaderBytes = 8 + 4 + 4 + sizeof(HeaderFields);
static_assert(sizeof(HeaderFields) == 44, "export header fields are 11 u32");

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

}  // namespace

Status Cache::exportSequence(uint64_t id, std::vector<uint8_t>* out) {
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  if (seq->busy) return busy("the sequence is being compacted");
  uint64_t total = kHeaderBytes + 4ull * (config_.layers + seq->streams.size()) + 4;
  const uint64_t perRow = config_.keyRowBytes() + config_.valueRowBytes() + 8ull;
  for (const Stream& s : seq->streams) total += perRow * static_cast<uint64_t>(s.length);
  out->clear();
  out->reserve(total);
  Writer w(out);
  w.bytes(kMagic, 8);
  w.value(kFormatVersion);
  w.value(kHeaderBytes);
  const HeaderFields fields = fieldsOf(config_);
  w.bytes(&fields, sizeof fields);
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
  if (crc32(bytes, size - 4) != stored) return corruptData("checksum mismatch: the sequence bytes are damaged");
  Reader r(bytes, size - 4);
  r.take(8);
  uint32_t version = 0, headerBytes = 0;
  r.bytes(&version, 4);
  r.bytes(&headerBytes, 4);
  if (version != kFormatVersion) return corruptData("unsupported sequence format version " + std::to_string(version));
  if (headerBytes != kHeaderBytes) return corruptData("bad header size");
  HeaderFields f;
  r.bytes(&f, sizeof f);
  const HeaderFields mine = fieldsOf(config_);
  if (f.layers != mine.layers || f.kvHeads != mine.kvHeads || f.headDim != mine.headDim) {
    return shapeMismatch("the sequence has " + std::to_string(f.layers) + " layers x " + std::to_string(f.kvHeads) +
                         " kv heads x headDim " + std::to_string(f.headDim) + "; this cache has " +
                         std::to_string(mine.layers) + " x " + std::to_string(mine.kvHeads) + " x " + std::to_string(mine.headDim));
  }
  if (std::memcmp(&f, &mine, sizeof f) != 0) {
    return invalidArgument("the sequence was exported with other storage formats, groupSize or rotation than this cache uses");
  }
  auto seq = std::make_unique<Sequence>();
  seq->streams.resize(config_.streamsPerSequence());
  seq->nextPosition.resize(config_.layers);
  if (!r.bytes(seq->nextPosition.data(), 4ull * config_.layers)) return corruptData("truncated sequence bytes");
  const uint64_t perRow = config_.keyRowBytes() + config_.valueRowBytes() + 8ull;
  uint64_t rowBytesTotal = 0;
  uint32_t blocksNeeded = 0;
  for (Stream& s : seq->streams) {
    if (!r.bytes(&s.length, 4)) return corruptData("truncated sequence bytes");
    if (s.length < 0) return corruptData("negative stream length");
    rowBytesTotal += perRow * static_cast<uint64_t>(s.length);
    blocksNeeded += (static_cast<uint32_t>(s.length) + config_.blockSize - 1) / config_.blockSize;
  }
  if (rowBytesTotal != r.remaining()) return corruptData("sequence bytes do not match the stream lengths they declare");
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(blocksNeeded, &fresh));
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
    const Status status = backend_->writeRawRows(pool(), view, 0, n, k, v, beta.data(), positions.data());
    if (!status.isOk()) {
      for (int32_t blk : fresh) pool_.release(blk);
      return status;
    }
  }
  seq->id = nextSequenceId_++;
  *id = seq->id;
  sequences_.emplace(seq->id, std::move(seq));
  return Status::ok();
}

}  // namespace kvc
