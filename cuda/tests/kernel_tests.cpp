// Kernel tests of the CUDA backend, run through the emulated build (cuda/emu) against the
// scalar reference (reference.h) on fresh random inputs: append (stored bytes bit-exact),
// readRows, rewriteRows (stored bytes bit-exact), attention (GQA, causal Tq > 1, beta, lse,
// attention mass), gatherRows and copyBlocks (bit-exact), for head_dim 8/64/128 and every
// storage format.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/emulated_backend.h"
#include "kvc/half.h"
#include "check.h"
#include "reference.h"

namespace {

using kvc::Storage;

struct Config {
  uint32_t headDim;
  uint32_t groupSize;
  uint32_t queriesPerHead;
  Storage keys;
  Storage values;
  bool rotate;
  kvc::InputType input;
  uint32_t blockSize;
};

std::string describe(const Config& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "D=%u G=%u gqa=%u keys=%s values=%s rotate=%d input=%s bs=%u", c.headDim, c.groupSize,
                c.queriesPerHead, kvc::storageName(c.keys), kvc::storageName(c.values), c.rotate,
                c.input == kvc::InputType::kF32 ? "f32" : "f16", c.blockSize);
  return buf;
}

// Host model of one stream: its block table and the reference encoding of its rows.
struct StreamModel {
  std::vector<int32_t> table;
  std::vector<std::vector<uint8_t>> keyRows, valueRows;
  std::vector<float> beta;
  std::vector<int32_t> positions;
  int32_t length() const { return static_cast<int32_t>(positions.size()); }
};

class Fixture {
 public:
  Fixture(const Config& c, uint64_t seed) : c_(c), rng_(seed) {
    backend_ = kvc::createEmulatedCudaBackend(kvc::BackendOptions{});
    layout_ = kvc::makeBlockLayout(c.blockSize, kvc::rowBytes(c.keys, c.headDim, c.groupSize),
                                   kvc::rowBytes(c.values, c.headDim, c.groupSize));
    EXPECT(backend_->reservePool(kCapacity, layout_.blockBytes).isOk(), "reservePool");
    EXPECT(backend_->commitPool(kCapacity).isOk(), "commitPool");
    pool_.base = backend_->poolBase();
    pool_.layout = layout_;
    codec_.keyStorage = c.keys;
    codec_.valueStorage = c.values;
    codec_.headDim = c.headDim;
    codec_.groupSize = c.groupSize;
    if (c.rotate) {
      for (int i = 0; i < 2; ++i) {
        auto& signs = i == 0 ? keySigns_ : valueSigns_;
        signs.resize(c.headDim);
        for (float& s : signs) s = (rng_() & 1) ? 1.0f : -1.0f;
      }
      codec_.keySigns = keySigns_.data();
      codec_.valueSigns = valueSigns_.data();
    }
    // Blocks are handed out in a shuffled order so that tables are not contiguous.
    freeBlocks_.resize(kCapacity);
    std::iota(freeBlocks_.begin(), freeBlocks_.end(), 0);
    std::shuffle(freeBlocks_.begin(), freeBlocks_.end(), rng_);
  }

  static constexpr uint32_t kCapacity = 96;
  kvc::Backend& backend() { return *backend_; }
  const kvc::PoolView& pool() const { return pool_; }
  const kvc::RowCodec& codec() const { return codec_; }
  std::mt19937_64& rng() { return rng_; }

  int32_t takeBlock() {
    const int32_t b = freeBlocks_.back();
    freeBlocks_.pop_back();
    return b;
  }

  void ensureBlocks(StreamModel& s, uint64_t rows) {
    while (s.table.size() * c_.blockSize < rows) s.table.push_back(takeBlock());
  }

  float randn() { return normal_(rng_); }

  // Appends T random rows to the given streams (one AppendParams call) and to their models.
  void append(std::vector<StreamModel*> streams, uint32_t T, int32_t firstPosition) {
    const uint32_t S = static_cast<uint32_t>(streams.size()), D = c_.headDim;
    std::vector<float> keys(static_cast<size_t>(T) * S * D), values(keys.size()), beta(static_cast<size_t>(T) * S);
    for (size_t i = 0; i < keys.size(); ++i) {
      // Channel 3 is an outlier channel, as real keys have.
      keys[i] = randn() * (i % D == 3 ? 8.0f : 1.0f);
      values[i] = randn();
    }
    for (float& b : beta) b = 0.5f * randn();
    std::vector<uint16_t> keys16, values16;
    if (c_.input == kvc::InputType::kF16) {
      for (float& k : keys) keys16.push_back(kvc::floatToHalf(k)), k = kvc::halfToFloat(keys16.back());
      for (float& v : values) values16.push_back(kvc::floatToHalf(v)), v = kvc::halfToFloat(values16.back());
    }
    std::vector<int32_t> positions(T), startRow(S);
    for (uint32_t t = 0; t < T; ++t) positions[t] = firstPosition + 2 * static_cast<int32_t>(t);  // gaps
    std::vector<const int32_t*> tables(S);
    for (uint32_t s = 0; s < S; ++s) {
      startRow[s] = streams[s]->length();
      ensureBlocks(*streams[s], static_cast<uint64_t>(startRow[s]) + T);
      tables[s] = streams[s]->table.data();
    }
    kvc::AppendParams p;
    p.pool = pool_;
    p.codec = codec_;
    p.streamCount = S;
    p.tokens = T;
    p.blockTables = tables.data();
    p.startRow = startRow.data();
    p.inputType = c_.input;
    p.keys = c_.input == kvc::InputType::kF32 ? static_cast<const void*>(keys.data()) : keys16.data();
    p.values = c_.input == kvc::InputType::kF32 ? static_cast<const void*>(values.data()) : values16.data();
    p.positions = positions.data();
    p.beta = beta.data();
    const kvc::Status st = backend_->append(p);
    EXPECT(st.isOk(), "append: %s", st.message().c_str());
    for (uint32_t t = 0; t < T; ++t) {
      for (uint32_t s = 0; s < S; ++s) {
        const float* k = &keys[(static_cast<size_t>(t) * S + s) * D];
        const float* v = &values[(static_cast<size_t>(t) * S + s) * D];
        streams[s]->keyRows.push_back(kvcref::encodeRow(k, c_.keys, D, c_.groupSize, codec_.keySigns));
        streams[s]->valueRows.push_back(kvcref::encodeRow(v, c_.values, D, c_.groupSize, codec_.valueSigns));
        streams[s]->beta.push_back(beta[t * S + s]);
        streams[s]->positions.push_back(positions[t]);
      }
    }
  }

  // The emulated device memory is host memory, so the tests can read the pool directly.
  const uint8_t* rowBase(const StreamModel& s, int32_t r) const {
    return pool_.base + static_cast<uint64_t>(s.table[r / c_.blockSize]) * layout_.blockBytes;
  }

  void checkStoredRows(const StreamModel& s, const char* what) {
    int bad = 0;
    for (int32_t r = 0; r < s.length(); ++r) {
      const uint8_t* base = rowBase(s, r);
      const uint32_t slot = r % c_.blockSize;
      const bool keyOk = std::memcmp(base + slot * layout_.keyRowBytes, s.keyRows[r].data(), layout_.keyRowBytes) == 0;
      const bool valueOk = std::memcmp(base + layout_.valuesOffset + slot * layout_.valueRowBytes,
                                       s.valueRows[r].data(), layout_.valueRowBytes) == 0;
      const bool betaOk = std::memcmp(base + layout_.betaOffset + 4 * slot, &s.beta[r], 4) == 0;
      const bool posOk = std::memcmp(base + layout_.positionsOffset + 4 * slot, &s.positions[r], 4) == 0;
      if (!(keyOk && valueOk && betaOk && posOk) && bad++ < 3) {
        EXPECT(false, "%s: row %d differs (key %d value %d beta %d position %d)", what, r, keyOk, valueOk, betaOk, posOk);
      }
    }
    EXPECT(bad == 0, "%s: %d rows differ from the reference encoding", what, bad);
  }

  std::vector<kvcref::RefRow> refRows(const StreamModel& s) const {
    const uint32_t D = c_.headDim;
    std::vector<kvcref::RefRow> rows(s.length());
    std::vector<float> tmp(D);
    for (int32_t r = 0; r < s.length(); ++r) {
      for (int i = 0; i < 2; ++i) {
        auto& out = i == 0 ? rows[r].key : rows[r].value;
        kvcref::decodeRowStored((i == 0 ? s.keyRows : s.valueRows)[r].data(), i == 0 ? c_.keys : c_.values, D,
                                c_.groupSize, tmp.data());
        out.assign(tmp.begin(), tmp.end());
        const float* signs = i == 0 ? codec_.keySigns : codec_.valueSigns;
        if (signs) kvcref::denseRotateInverse(out.data(), signs, D);
      }
      rows[r].beta = s.beta[r];
      rows[r].position = s.positions[r];
    }
    return rows;
  }

 private:
  Config c_;
  std::mt19937_64 rng_;
  std::normal_distribution<float> normal_{0.0f, 1.0f};
  std::unique_ptr<kvc::Backend> backend_;
  kvc::BlockLayout layout_;
  kvc::PoolView pool_;
  kvc::RowCodec codec_;
  std::vector<float> keySigns_, valueSigns_;
  std::vector<int32_t> freeBlocks_;
};

kvc::StreamView view(const StreamModel& s) {
  kvc::StreamView v;
  v.blockTable = s.table.data();
  v.length = s.length();
  return v;
}

void testReadRows(Fixture& f, const Config& c, const StreamModel& s) {
  const uint32_t D = c.headDim;
  const uint32_t start = 3, count = static_cast<uint32_t>(s.length()) - 5;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> keys(count * D, nan), values(count * D, nan), beta(count, nan);
  std::vector<int32_t> positions(count, -7);
  const kvc::Status st = f.backend().readRows(f.pool(), f.codec(), view(s), start, count, keys.data(), values.data(),
                                              beta.data(), positions.data());
  EXPECT(st.isOk(), "readRows: %s", st.message().c_str());
  std::vector<float> expect(D);
  int bad = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t r = start + i;
    for (int k = 0; k < 2; ++k) {
      kvcref::decodeRowStored((k == 0 ? s.keyRows : s.valueRows)[r].data(), k == 0 ? c.keys : c.values, D, c.groupSize,
                              expect.data());
      const float* signs = k == 0 ? f.codec().keySigns : f.codec().valueSigns;
      if (signs) kvcref::rotateInverse(expect.data(), signs, D);
      const float* got = (k == 0 ? keys : values).data() + static_cast<size_t>(i) * D;
      bad += std::memcmp(got, expect.data(), D * sizeof(float)) != 0;
    }
    bad += std::memcmp(&beta[i], &s.beta[r], 4) != 0 || positions[i] != s.positions[r];
  }
  EXPECT(bad == 0, "readRows: %d rows differ bit-wise from the reference decode", bad);

  // Only some outputs requested.
  std::vector<int32_t> onlyPositions(count, -7);
  EXPECT(f.backend().readRows(f.pool(), f.codec(), view(s), start, count, nullptr, nullptr, nullptr,
                              onlyPositions.data()).isOk(), "readRows positions only");
  EXPECT(onlyPositions == positions, "readRows positions only: values");
  EXPECT(!f.backend().readRows(f.pool(), f.codec(), view(s), 1, static_cast<uint32_t>(s.length()), keys.data(),
                               nullptr, nullptr, nullptr).isOk(), "readRows past the end is rejected");
}

// Rewrites values and/or beta of rows of s (as compaction does with fitted values) and checks
// every stored row against the reference: rewritten value rows must be the bytes the
// reference encoder gives for the new input (the bytes append would store), keys and
// positions and all other rows untouched.
void testRewriteRows(Fixture& f, const Config& c, StreamModel& s) {
  const uint32_t D = c.headDim;
  auto rewrite = [&](uint32_t start, uint32_t count, bool withValues, bool withBeta, const char* what) {
    std::vector<float> values(static_cast<size_t>(count) * D), beta(count);
    for (size_t i = 0; i < values.size(); ++i) values[i] = f.randn() * (i % D == 5 ? 6.0f : 1.5f);
    for (float& b : beta) b = f.randn() - 1.0f;
    const kvc::Status st = f.backend().rewriteRows(f.pool(), f.codec(), view(s), start, count,
                                                   withValues ? values.data() : nullptr, withBeta ? beta.data() : nullptr);
    EXPECT(st.isOk(), "rewriteRows (%s): %s", what, st.message().c_str());
    for (uint32_t i = 0; i < count; ++i) {
      if (withValues) {
        s.valueRows[start + i] = kvcref::encodeRow(&values[static_cast<size_t>(i) * D], c.values, D, c.groupSize,
                                                   f.codec().valueSigns);
      }
      if (withBeta) s.beta[start + i] = beta[i];
    }
    f.checkStoredRows(s, what);
  };
  // The stream has 50 rows. Worked example for blockSize 16: rows 7..36 are slots 7..15 of
  // table entry 0, all of entry 1 and slots 0..4 of entry 2.
  rewrite(7, 30, true, true, "rewrite values and beta");
  rewrite(0, 3, true, false, "rewrite values only");
  rewrite(static_cast<uint32_t>(s.length()) - 4, 4, false, true, "rewrite beta only");
  rewrite(static_cast<uint32_t>(s.length()) - 1, 1, true, true, "rewrite the last row");

  std::vector<float> one(D, 0.25f);
  const float b = 1.0f;
  EXPECT(f.backend().rewriteRows(f.pool(), f.codec(), view(s), 0, 0, nullptr, nullptr).isOk(), "rewrite of no rows");
  EXPECT(f.backend().rewriteRows(f.pool(), f.codec(), view(s), static_cast<uint32_t>(s.length()), 1, one.data(), &b).code() ==
             kvc::StatusCode::kInvalidArgument,
         "rewrite past the end is rejected");
  kvc::StreamView bad = view(s);
  std::vector<int32_t> badTable(s.table);
  badTable[0] = Fixture::kCapacity + 3;
  bad.blockTable = badTable.data();
  EXPECT(f.backend().rewriteRows(f.pool(), f.codec(), bad, 0, 1, one.data(), &b).code() ==
             kvc::StatusCode::kInvalidArgument,
         "rewrite into a block outside the pool is rejected");
  f.checkStoredRows(s, "rejected rewrites change nothing");
}

// Attention for all streams at once, queries laid out as one [tq, queryHeads, D] tensor.
void testAttention(Fixture& f, const Config& c, std::vector<StreamModel*> streams, uint32_t tq, bool scores) {
  const uint32_t S = static_cast<uint32_t>(streams.size()), G = c.queriesPerHead, D = c.headDim;
  const uint32_t queryHeads = S * G;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> queries(static_cast<size_t>(tq) * queryHeads * D), out(queries.size(), nan);
  std::vector<float> lse(static_cast<size_t>(tq) * queryHeads, nan);
  for (float& q : queries) q = f.randn();
  std::vector<std::vector<int32_t>> queryPositions(S);
  std::vector<std::vector<float>> scoreBuffers(S), scoreInit(S);
  std::vector<kvc::AttentionStream> views(S);
  for (uint32_t s = 0; s < S; ++s) {
    const StreamModel& m = *streams[s];
    // Query t sits at the position of the t-th of the last tq rows.
    for (uint32_t t = 0; t < tq; ++t) queryPositions[s].push_back(m.positions[m.length() - tq + t]);
    scoreInit[s].resize(m.length());
    for (float& x : scoreInit[s]) x = std::fabs(f.randn());
    scoreBuffers[s] = scoreInit[s];
    views[s].kv = view(m);
    views[s].queryPositions = queryPositions[s].data();
    views[s].queries = queries.data() + static_cast<size_t>(s) * G * D;
    views[s].out = out.data() + static_cast<size_t>(s) * G * D;
    views[s].lse = lse.data() + static_cast<size_t>(s) * G;
    views[s].scores = scores ? scoreBuffers[s].data() : nullptr;
  }
  kvc::AttentionParams p;
  p.pool = f.pool();
  p.codec = f.codec();
  p.streamCount = S;
  p.streams = views.data();
  p.queriesPerHead = G;
  p.tq = tq;
  p.tokenStride = static_cast<uint64_t>(queryHeads) * D;
  p.lseTokenStride = queryHeads;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  const kvc::Status st = f.backend().attention(p);
  EXPECT(st.isOk(), "attention: %s", st.message().c_str());

  double worst = 0;
  for (uint32_t s = 0; s < S; ++s) {
    const auto rows = f.refRows(*streams[s]);
    std::vector<double> mass(rows.size(), 0.0);
    for (uint32_t t = 0; t < tq; ++t) {
      for (uint32_t g = 0; g < G; ++g) {
        const size_t head = static_cast<size_t>(t) * queryHeads + s * G + g;
        const auto ref = kvcref::attention(rows, &queries[head * D], D, p.scale, queryPositions[s][t]);
        for (uint32_t d = 0; d < D; ++d) {
          const double err = std::fabs(out[head * D + d] - ref.out[d]) / (std::fabs(ref.out[d]) + 0.1);
          worst = std::max(worst, std::isnan(err) ? 1e9 : err);
        }
        const double lseErr = std::fabs(lse[head] - ref.lse) / (std::fabs(ref.lse) + 1.0);
        EXPECT(lseErr <= 1e-5, "lse stream %u t %u g %u: %.9g vs %.9g", s, t, g, lse[head], ref.lse);
        for (size_t r = 0; r < rows.size(); ++r) mass[r] += ref.mass[r];
      }
    }
    if (scores) {
      double worstMass = 0;
      for (size_t r = 0; r < rows.size(); ++r) {
        worstMass = std::max(worstMass, std::fabs(scoreBuffers[s][r] - (scoreInit[s][r] + mass[r])));
      }
      EXPECT(worstMass <= 1e-5, "attention mass stream %u: max error %.3g", s, worstMass);
    }
  }
  // Both sides decode the same stored bytes. The f32 kernel agrees to 1e-5 relative; the
  // tensor-core kernel (head_dim 64/128, f16/int8/int4) takes q·k with the query split into two
  // f16 terms (22 significant bits instead of 24), up to 4x the rounding: 4e-5 (see
  // attention_tests.cpp), far below what a wrong row, scale or mask gives.
  EXPECT(worst <= 4e-5, "attention output: max relative error %.3g (tq %u)", worst, tq);
}

void testGather(Fixture& f, const Config& c, StreamModel& a, StreamModel& b) {
  // a -> fresh stream, keeping a random ~60% of rows in order (an eviction).
  std::vector<int32_t> keep;
  for (int32_t r = 0; r < a.length(); ++r) {
    if (f.rng()() % 10 < 6) keep.push_back(r);
  }
  StreamModel fresh;
  f.ensureBlocks(fresh, keep.size());
  kvc::StreamView dst = view(fresh);
  kvc::Status st = f.backend().gatherRows(f.pool(), view(a), keep.data(), static_cast<uint32_t>(keep.size()), dst, 0);
  EXPECT(st.isOk(), "gatherRows: %s", st.message().c_str());
  for (int32_t r : keep) {
    fresh.keyRows.push_back(a.keyRows[r]);
    fresh.valueRows.push_back(a.valueRows[r]);
    fresh.beta.push_back(a.beta[r]);
    fresh.positions.push_back(a.positions[r]);
  }
  f.checkStoredRows(fresh, "gather into a fresh stream");

  // b compacted in place (source and destination share blocks), then rows of b appended at
  // the end of the fresh stream, starting mid-block.
  std::vector<int32_t> keepB;
  for (int32_t r = 0; r < b.length(); r += 2) keepB.push_back(r);
  st = f.backend().gatherRows(f.pool(), view(b), keepB.data(), static_cast<uint32_t>(keepB.size()), view(b), 0);
  EXPECT(st.isOk(), "in-place gatherRows: %s", st.message().c_str());
  StreamModel compacted;
  compacted.table = b.table;
  for (int32_t r : keepB) {
    compacted.keyRows.push_back(b.keyRows[r]);
    compacted.valueRows.push_back(b.valueRows[r]);
    compacted.beta.push_back(b.beta[r]);
    compacted.positions.push_back(b.positions[r]);
  }
  f.checkStoredRows(compacted, "in-place gather");

  const std::vector<int32_t> tail = {1, 0, 4};  // any order is allowed
  const uint32_t dstStart = static_cast<uint32_t>(fresh.length());
  f.ensureBlocks(fresh, dstStart + tail.size());
  st = f.backend().gatherRows(f.pool(), view(compacted), tail.data(), 3, view(fresh), dstStart);
  EXPECT(st.isOk(), "gatherRows at an offset: %s", st.message().c_str());
  for (int32_t r : tail) {
    fresh.keyRows.push_back(compacted.keyRows[r]);
    fresh.valueRows.push_back(compacted.valueRows[r]);
    fresh.beta.push_back(compacted.beta[r]);
    fresh.positions.push_back(compacted.positions[r]);
  }
  f.checkStoredRows(fresh, "gather at an offset");

  const int32_t outside = a.length();
  EXPECT(!f.backend().gatherRows(f.pool(), view(a), &outside, 1, dst, 0).isOk(), "gather of a row past the end fails");

  // Attention over the evicted / compacted streams still matches the reference.
  testAttention(f, c, {&fresh, &compacted}, 1, false);
  a = fresh;
  b = compacted;
}

void testCopyBlocks(Fixture& f, const StreamModel& s) {
  std::vector<int32_t> src(s.table.begin(), s.table.end()), dst;
  for (size_t i = 0; i < src.size(); ++i) dst.push_back(f.takeBlock());
  const kvc::Status st = f.backend().copyBlocks(f.pool(), src.data(), dst.data(), static_cast<uint32_t>(src.size()));
  EXPECT(st.isOk(), "copyBlocks: %s", st.message().c_str());
  const uint32_t bytes = f.pool().layout.blockBytes;
  int bad = 0;
  for (size_t i = 0; i < src.size(); ++i) {
    bad += std::memcmp(f.pool().base + uint64_t(src[i]) * bytes, f.pool().base + uint64_t(dst[i]) * bytes, bytes) != 0;
  }
  EXPECT(bad == 0, "copyBlocks: %d blocks differ", bad);
  const int32_t outside = Fixture::kCapacity;
  EXPECT(f.backend().copyBlocks(f.pool(), &outside, &dst[0], 1).code() == kvc::StatusCode::kInvalidArgument,
         "copyBlocks rejects a block outside the pool");
}

void runCase(const Config& c, uint64_t seed) {
  currentCase = describe(c);
  const int before = failures;
  Fixture f(c, seed);
  std::vector<StreamModel> streams(3);
  // Stream 0 gets a head start so that startRow differs between streams and is not block aligned.
  f.append({&streams[0]}, 5, 0);
  f.append({&streams[0], &streams[1], &streams[2]}, 45, 100);
  f.append({&streams[1], &streams[2]}, 7, 300);
  for (size_t s = 0; s < streams.size(); ++s) f.checkStoredRows(streams[s], "append");
  testReadRows(f, c, streams[0]);
  testRewriteRows(f, c, streams[0]);  // attention below then runs over the rewritten rows
  testAttention(f, c, {&streams[0], &streams[1], &streams[2]}, 1, true);
  testAttention(f, c, {&streams[0], &streams[1], &streams[2]}, 3, true);  // chunked prefill, causal
  testGather(f, c, streams[1], streams[2]);
  testCopyBlocks(f, streams[0]);
  std::printf("%-80s %s\n", currentCase.c_str(), failures == before ? "ok" : "FAILED");
}

void testErrors() {
  currentCase = "errors";
  auto backend = kvc::createEmulatedCudaBackend(kvc::BackendOptions{});
  const kvc::BlockLayout layout = kvc::makeBlockLayout(16, kvc::rowBytes(Storage::kF32, 24, 8), kvc::rowBytes(Storage::kF32, 24, 8));
  EXPECT(backend->reservePool(8, layout.blockBytes).isOk(), "reserve");
  EXPECT(backend->commitPool(9).code() == kvc::StatusCode::kOutOfMemory, "commit beyond the reservation");
  EXPECT(backend->commitPool(4).isOk(), "commit");
  kvc::PoolView pool{backend->poolBase(), layout};
  kvc::RowCodec codec;
  codec.keyStorage = codec.valueStorage = Storage::kF32;
  codec.headDim = 24;
  codec.groupSize = 8;
  std::vector<float> rows(24, 1.0f);
  const int32_t table[1] = {5};  // committed blocks are 0..3
  const int32_t* tables[1] = {table};
  const int32_t startRow = 0, position = 0;
  kvc::AppendParams p;
  p.pool = pool;
  p.codec = codec;
  p.streamCount = 1;
  p.tokens = 1;
  p.blockTables = tables;
  p.startRow = &startRow;
  p.keys = rows.data();
  p.values = rows.data();
  p.positions = &position;
  EXPECT(backend->append(p).code() == kvc::StatusCode::kInvalidArgument, "append into an uncommitted block");
  const int32_t table0[1] = {0};
  tables[0] = table0;
  EXPECT(backend->append(p).isOk(), "append head_dim 24");
  kvc::AttentionStream stream;
  stream.kv.blockTable = table0;
  stream.kv.length = 1;
  stream.queryPositions = &position;
  std::vector<float> out(24);
  stream.queries = rows.data();
  stream.out = out.data();
  kvc::AttentionParams a;
  a.pool = pool;
  a.codec = codec;
  a.streamCount = 1;
  a.streams = &stream;
  // head_dim 24 has no specialized kernel: the generic one serves it. One visible row of
  // ones: the output is that row.
  const kvc::Status attended = backend->attention(a);
  EXPECT(attended.isOk(), "attention head_dim 24 (generic kernel): %s", attended.message().c_str());
  EXPECT(std::all_of(out.begin(), out.end(), [](float x) { return std::fabs(x - 1.0f) <= 1e-6f; }),
         "attention head_dim 24: output %g, expected 1", out[0]);
  codec.keySigns = rows.data();
  p.codec = codec;
  EXPECT(backend->append(p).code() == kvc::StatusCode::kInvalidArgument, "rotation needs a power-of-two head_dim");
  std::printf("%-80s %s\n", "error statuses", failures ? "FAILED" : "ok");
}

}  // namespace

// Optional argument: run only the case with this index (for slow runs, e.g. ThreadSanitizer
// with KVC_EMU_MODE=threads).
int main(int argc, char** argv) {
  const int only = argc > 1 ? std::atoi(argv[1]) : -1;
  using IT = kvc::InputType;
  const Config configs[] = {
      {8, 8, 1, Storage::kF32, Storage::kF32, false, IT::kF32, 16},
      {8, 8, 4, Storage::kF16, Storage::kBF16, false, IT::kF16, 16},
      {8, 4, 4, Storage::kInt8, Storage::kInt4, true, IT::kF32, 16},
      {64, 32, 1, Storage::kF32, Storage::kF32, true, IT::kF32, 32},
      {64, 32, 4, Storage::kF16, Storage::kF16, false, IT::kF32, 16},
      {64, 16, 4, Storage::kInt4, Storage::kInt8, false, IT::kF16, 32},
      {128, 32, 1, Storage::kBF16, Storage::kBF16, false, IT::kF32, 32},
      {128, 32, 4, Storage::kF32, Storage::kF16, false, IT::kF16, 16},
      {128, 32, 4, Storage::kInt8, Storage::kInt8, true, IT::kF32, 32},
      {128, 32, 1, Storage::kInt4, Storage::kInt4, true, IT::kF16, 16},
      {128, 64, 4, Storage::kInt8, Storage::kInt4, false, IT::kF32, 32},
  };
  uint64_t seed = 0x6b7663;
  int index = 0;
  for (const Config& c : configs) {
    if (only < 0 || only == index) runCase(c, seed);
    ++seed;
    ++index;
  }
  if (only < 0) testErrors();
  std::printf("kvc_cuda_kernel_tests: %d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
