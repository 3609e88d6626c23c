// Tests of the CUDA split-K attention (cuda/kernels/attention.cu) through the emulated
// backend, against the double-precision scalar reference (reference.h): every key x value
// format pair at head_dim 64, 128 and a generic one (40), GQA 1/2/4/8, decode (Tq = 1) and
// chunked prefill (Tq > 1) with causal cutoffs, streams short and long enough for four
// splits, block sizes that do not divide the split length, nonzero beta, lse, attention mass,
// several streams (one of them empty) in one launch. Rows are written straight into the
// pool with the reference encoder (emulated device memory is host memory), so these tests
// do not depend on append.
//
// Tolerances (emulator: __expf is std::exp in float, so the kernel differs from the double
// reference only by f32 rounding):
//   out   |got - ref| <= 2e-5 * (|ref| + 0.1). Sources: f32 dot products over head_dim terms
//         (~sqrt(D) * 6e-8 relative), f32 sums of up to 1840 exp terms in tile order (the
//         measured worst case is ~3e-6), the rotation's butterflies; 2e-5 leaves ~5x margin
//         and still catches any dropped row (a row carries >= 1e-4 of the mass here).
//   lse   |got - ref| <= 1e-5 * (|ref| + 1): one log of an f32 sum.
//   mass  |got - ref| <= 1e-5 per row, on scores of magnitude ~1 (f32 spacing 1.2e-7) plus
//         at most 24 added probabilities.
// On a GPU __expf has ~2 ulp plus |x| * 2^-24 argument error (|x| < 60 here: ~4e-6
// relative), which the same bounds still cover for out and mass; lse is unaffected beyond it.
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

#include "cuda/bench/attention_bench.h"
#include "cuda/emulated_backend.h"
#include "kvc/half.h"
#include "check.h"
#include "reference.h"

namespace {

using kvc::Storage;

// Outputs: the tensor-core decode kernel (attention_mma.cuh) takes q·k with the query split
// into two f16 terms (22 significant bits instead of f32's 24), so its logits carry up to 4x
// the rounding of the f32 kernel; 4e-5 relative admits that (worst seen 2.4e-5 at GQA 8) and
// still fails any wrong row, scale or mask by orders of magnitude.
constexpr double kOutTol = 4e-5, kLseTol = 1e-5, kMassTol = 1e-5;
double worstOut = 0, worstLse = 0, worstMass = 0;  // reported, to keep the margins honest

struct Config {
  uint32_t headDim, groupSize, gqa;
  Storage keys, values;
  bool rotate;
  uint32_t blockSize;
};

struct Stream {
  std::vector<int32_t> table;
  std::vector<kvcref::RefRow> ref;  // dequantized, un-rotated rows
  std::vector<int32_t> positions;
  int32_t length() const { return static_cast<int32_t>(positions.size()); }
};

class Case {
 public:
  Case(const Config& c, const std::vector<int32_t>& lengths, uint64_t seed) : c_(c), rng_(seed) {
    const uint32_t D = c.headDim;
    layout_ = kvc::makeBlockLayout(c.blockSize, kvc::rowBytes(c.keys, D, c.groupSize), kvc::rowBytes(c.values, D, c.groupSize));
    uint64_t blocks = 0;
    for (int32_t n : lengths) blocks += (n + c.blockSize - 1) / c.blockSize;
    blocks += 2;
    backend_ = kvc::createEmulatedCudaBackend(kvc::BackendOptions{});
    EXPECT(backend_->reservePool(blocks, layout_.blockBytes).isOk(), "reservePool");
    EXPECT(backend_->commitPool(blocks).isOk(), "commitPool");
    pool_ = kvc::PoolView{backend_->poolBase(), layout_};
    codec_.keyStorage = c.keys;
    codec_.valueStorage = c.values;
    codec_.headDim = D;
    codec_.groupSize = c.groupSize;
    if (c.rotate) {
      keySigns_.resize(D);
      valueSigns_.resize(D);
      for (float& s : keySigns_) s = (rng_() & 1) ? 1.0f : -1.0f;
      for (float& s : valueSigns_) s = (rng_() & 1) ? 1.0f : -1.0f;
      codec_.keySigns = keySigns_.data();
      codec_.valueSigns = valueSigns_.data();
    }
    std::vector<int32_t> free(blocks);
    std::iota(free.begin(), free.end(), 0);
    std::shuffle(free.begin(), free.end(), rng_);  // tables are not contiguous
    for (int32_t n : lengths) {
      Stream s;
      while (s.table.size() * c.blockSize < static_cast<size_t>(n)) s.table.push_back(free.back()), free.pop_back();
      int32_t pos = static_cast<int32_t>(rng_() % 5);
      for (int32_t r = 0; r < n; ++r) writeRow(s, r, pos += 1 + static_cast<int32_t>(rng_() % 3));  // gaps
      streams_.push_back(std::move(s));
    }
  }

  // Attention over all streams in one call. cutoffs[s][t] (explicit causal positions) or,
  // when empty, the positions of each stream's last tq rows. Checks out, lse and mass.
  void run(uint32_t tq, const std::vector<std::vector<int32_t>>& cutoffs, bool scores, const char* what) {
    const uint32_t S = static_cast<uint32_t>(streams_.size()), G = c_.gqa, D = c_.headDim, H = S * G;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> queries(static_cast<size_t>(tq) * H * D), out(queries.size(), nan), lse(size_t(tq) * H, nan);
    for (float& q : queries) q = normal_(rng_);
    std::vector<std::vector<float>> scoreBuf(S), scoreInit(S);
    std::vector<std::vector<int32_t>> qpos(S);
    std::vector<kvc::AttentionStream> views(S);
    for (uint32_t s = 0; s < S; ++s) {
      const Stream& m = streams_[s];
      for (uint32_t t = 0; t < tq; ++t) qpos[s].push_back(cutoffs.empty() ? m.positions[m.length() - tq + t] : cutoffs[s][t]);
      scoreInit[s].resize(m.length());
      for (float& x : scoreInit[s]) x = std::fabs(normal_(rng_));
      scoreBuf[s] = scoreInit[s];
      views[s].kv = kvc::StreamView{m.table.data(), m.length()};
      views[s].queryPositions = cutoffs.empty() ? nullptr : qpos[s].data();
      views[s].queries = queries.data() + static_cast<size_t>(s) * G * D;
      views[s].out = out.data() + static_cast<size_t>(s) * G * D;
      views[s].lse = lse.data() + static_cast<size_t>(s) * G;
      views[s].scores = scores ? scoreBuf[s].data() : nullptr;
    }
    kvc::AttentionParams p;
    p.pool = pool_;
    p.codec = codec_;
    p.streamCount = S;
    p.streams = views.data();
    p.queriesPerHead = G;
    p.tq = tq;
    p.tokenStride = static_cast<uint64_t>(H) * D;
    p.lseTokenStride = H;
    p.scale = 1.0f / std::sqrt(static_cast<float>(D));
    const kvc::Status st = backend_->attention(p);
    EXPECT(st.isOk(), "%s: attention: %s", what, st.message().c_str());

    for (uint32_t s = 0; s < S; ++s) {
      const Stream& m = streams_[s];
      std::vector<double> mass(m.ref.size(), 0.0);
      double outErr = 0, lseErr = 0;
      for (uint32_t t = 0; t < tq; ++t) {
        for (uint32_t g = 0; g < G; ++g) {
          const size_t head = static_cast<size_t>(t) * H + s * G + g;
          const auto ref = kvcref::attention(m.ref, &queries[head * D], D, p.scale, qpos[s][t]);
          for (uint32_t d = 0; d < D; ++d) {
            const double e = std::fabs(out[head * D + d] - ref.out[d]) / (std::fabs(ref.out[d]) + 0.1);
            outErr = std::max(outErr, std::isnan(e) ? 1e9 : e);
          }
          if (std::isinf(ref.lse)) {
            lseErr = std::max(lseErr, lse[head] == -std::numeric_limits<float>::infinity() ? 0.0 : 1e9);
          } else {
            const double e = std::fabs(lse[head] - ref.lse) / (std::fabs(ref.lse) + 1.0);
            lseErr = std::max(lseErr, std::isnan(e) ? 1e9 : e);
          }
          for (size_t r = 0; r < mass.size(); ++r) mass[r] += ref.mass[r];
        }
      }
      EXPECT(outErr <= kOutTol, "%s: stream %u (length %d) output error %.3g", what, s, m.length(), outErr);
      EXPECT(lseErr <= kLseTol, "%s: stream %u lse error %.3g", what, s, lseErr);
      worstOut = std::max(worstOut, outErr);
      worstLse = std::max(worstLse, lseErr);
      if (scores) {
        double e = 0;
        for (size_t r = 0; r < mass.size(); ++r) e = std::max(e, std::fabs(scoreBuf[s][r] - (scoreInit[s][r] + mass[r])));
        EXPECT(e <= kMassTol, "%s: stream %u attention mass error %.3g", what, s, e);
        worstMass = std::max(worstMass, e);
      }
    }
  }

  const Stream& stream(size_t i) const { return streams_[i]; }

 private:
  // Row r of s: random key (channel 3 an outlier, as real keys have), value and beta,
  // encoded by the reference into the pool.
  void writeRow(Stream& s, int32_t r, int32_t position) {
    const uint32_t D = c_.headDim;
    std::vector<float> k(D), v(D);
    for (uint32_t d = 0; d < D; ++d) k[d] = normal_(rng_) * (d == 3 ? 8.0f : 1.0f), v[d] = normal_(rng_);
    const float beta = 0.5f * normal_(rng_);
    const auto keyRow = kvcref::encodeRow(k.data(), c_.keys, D, c_.groupSize, codec_.keySigns);
    const auto valueRow = kvcref::encodeRow(v.data(), c_.values, D, c_.groupSize, codec_.valueSigns);
    uint8_t* block = pool_.base + static_cast<uint64_t>(s.table[r / c_.blockSize]) * layout_.blockBytes;
    const uint32_t slot = r % c_.blockSize;
    std::memcpy(block + slot * layout_.keyRowBytes, keyRow.data(), keyRow.size());
    std::memcpy(block + layout_.valuesOffset + slot * layout_.valueRowBytes, valueRow.data(), valueRow.size());
    std::memcpy(block + layout_.betaOffset + 4 * slot, &beta, 4);
    std::memcpy(block + layout_.positionsOffset + 4 * slot, &position, 4);
    kvcref::RefRow row;
    std::vector<float> tmp(D);
    for (int i = 0; i < 2; ++i) {
      kvcref::decodeRowStored((i ? valueRow : keyRow).data(), i ? c_.values : c_.keys, D, c_.groupSize, tmp.data());
      auto& dst = i ? row.value : row.key;
      dst.assign(tmp.begin(), tmp.end());
      const float* signs = i ? codec_.valueSigns : codec_.keySigns;
      if (signs) kvcref::denseRotateInverse(dst.data(), signs, D);
    }
    row.beta = beta;
    row.position = position;
    s.ref.push_back(std::move(row));
    s.positions.push_back(position);
  }

  Config c_;
  std::mt19937_64 rng_;
  std::normal_distribution<float> normal_{0.0f, 1.0f};
  std::unique_ptr<kvc::Backend> backend_;
  kvc::BlockLayout layout_;
  kvc::PoolView pool_;
  kvc::RowCodec codec_;
  std::vector<float> keySigns_, valueSigns_;
  std::vector<Stream> streams_;
};

std::string describe(const Config& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "D=%u G=%u gqa=%u keys=%s values=%s rotate=%d bs=%u", c.headDim, c.groupSize, c.gqa,
                kvc::storageName(c.keys), kvc::storageName(c.values), c.rotate, c.blockSize);
  return buf;
}

// One format pair. Streams: short (45 rows), long (3 * 512 + 301 rows: four splits of 512, the
// last partial), as short as the chunk (3 rows), empty (in a second launch). Worked example
// for blockSize 48: split 1 starts at row 512 = block 10, slot 32, so its first tile starts
// mid-block and its copy is widened down to a 16-byte boundary.
void runPair(const Config& c, bool withLong, uint64_t seed) {
  currentCase = describe(c);
  const int before = failures;
  std::vector<int32_t> lengths = {45, withLong ? 3 * 512 + 301 : 70, 3};
  Case k(c, lengths, seed);
  k.run(1, {}, true, "decode");  // positions of the last row: everything visible
  // Chunked prefill, Tq = 3, with the positions of the last three rows (causal inside the chunk).
  k.run(3, {}, true, "prefill");
  // Explicit cutoffs: the last row, a row in the middle (on a long stream: inside split 1, so
  // splits 2 and 3 are entirely masked), and before every row (output 0, lse -inf).
  std::vector<std::vector<int32_t>> cut;
  for (size_t s = 0; s < lengths.size(); ++s) {
    const Stream& m = k.stream(s);
    cut.push_back({m.positions.back(), m.positions[m.length() / 3], m.positions.front() - 1});
  }
  k.run(3, cut, true, "explicit cutoffs");
  // Several streams including an empty one, decode, no scores.
  Case e(c, {0, 33}, seed + 1000);
  e.run(1, {{5}, {e.stream(1).positions.back()}}, false, "empty stream");
  std::printf("%-72s %s\n", currentCase.c_str(), failures == before ? "ok" : "FAILED");
}

// The GPU check's timing entry points, run at tiny shapes: they must succeed, produce a finite
// output (checked inside) and count the bytes a launch reads. Worked example: 2 x 2 streams of
// 2100 rows (five splits each), int8 keys (64 + 2 scales = 68 bytes), int4 values (32 + 8 = 40
// bytes), 8 bytes of beta and position: 4 * 2100 * 116 = 974400, + 4 * 132 table entries * 4
// + 16 query heads * 64 floats * 4.
void testBench() {
  currentCase = "bench entry points";
  namespace bench = kvc::cuda_emu::bench;
  bench::DecodeAttentionShape shape;
  shape.batch = 2;
  shape.kvHeads = 2;
  shape.queriesPerHead = 4;
  shape.headDim = 64;
  shape.tokens = 2100;
  shape.blockSize = 16;
  shape.keys = Storage::kInt8;
  shape.values = Storage::kInt4;
  shape.warmup = 1;
  shape.iterations = 2;
  const bench::Timing t = bench::decodeAttention(shape);
  EXPECT(t.status.isOk(), "decodeAttention: %s", t.status.message().c_str());
  EXPECT(t.bytes == 974400u + 4 * 132 * 4 + 16 * 64 * 4, "decodeAttention bytes %llu", (unsigned long long)t.bytes);
  EXPECT(t.medianMs > 0 && t.gbPerSecond > 0, "decodeAttention timing %g ms", t.medianMs);
  shape.headDim = 24;
  shape.groupSize = 5;  // does not divide head_dim
  EXPECT(!bench::decodeAttention(shape).status.isOk(), "decodeAttention rejects a bad group size");
  const bench::Timing c = bench::deviceCopyBandwidth(1 << 20, 3);
  EXPECT(c.status.isOk() && c.bytes == 2u << 20 && c.gbPerSecond > 0, "deviceCopyBandwidth: %s",
         c.status.message().c_str());
  std::printf("%-72s %s\n", currentCase.c_str(), failures ? "FAILED" : "ok");
}

}  // namespace

// Optional argument: run only the pair with this index.
int main(int argc, char** argv) {
  const int only = argc > 1 ? std::atoi(argv[1]) : -1;
  const uint32_t gqas[] = {1, 2, 4, 8};
  const uint32_t blockSizes[] = {32, 16, 48, 7};
  int index = 0;
  uint64_t seed = 0xa77e;
  for (uint32_t D : {128u, 64u, 40u}) {
    for (int k = 0; k < kvc::kStorageCount; ++k) {
      for (int v = 0; v < kvc::kStorageCount; ++v, ++index, ++seed) {
        if (only >= 0 && only != index) continue;
        Config c;
        c.headDim = D;
        c.keys = static_cast<Storage>(k);
        c.values = static_cast<Storage>(v);
        c.gqa = gqas[index % 4];
        c.blockSize = blockSizes[(index / 4) % 4];
        // Group sizes: the common 32, a large one, and 2 (runs cross groups: the per-element path).
        const uint32_t groups128[] = {32, 64, 2, 16}, groups64[] = {32, 16, 2, 64}, groups40[] = {8, 20, 2, 10};
        const uint32_t* groups = D == 128 ? groups128 : D == 64 ? groups64 : groups40;
        c.groupSize = groups[(index / 3) % 4];
        c.rotate = D != 40 && index % 5 == 1;
        // Long streams for D = 128 and 64 (every pair); the generic class gets one per key format.
        runPair(c, D != 40 || v == k, seed);
      }
    }
  }
  // The tensor-core kernel (head_dim 64 / 128, f16 / int8 / int4 keys and values, blockSize a
  // multiple of 16, groups of 32 / 64): every format pair at GQA 4 (its design point) and GQA 8
  // (two query tiles), with and without rotation, including a long stream of four splits.
  const Storage mmaFormats[] = {Storage::kF16, Storage::kInt8, Storage::kInt4};
  for (uint32_t D : {128u, 64u}) {
    for (Storage k : mmaFormats) {
      for (Storage v : mmaFormats) {
        const int i = index++;
        ++seed;
        if (only >= 0 && only != i) continue;
        Config c;
        c.headDim = D;
        c.keys = k;
        c.values = v;
        c.gqa = i % 2 ? 8 : 4;
        c.blockSize = i % 3 ? 32 : 16;
        c.groupSize = i % 4 ? 32 : 64;
        c.rotate = i % 2 == 0;
        runPair(c, D == 128, seed);
      }
    }
  }
  if (only < 0) testBench();
  std::printf("worst errors: out %.3g (tol %.0e), lse %.3g (tol %.0e), mass %.3g (tol %.0e)\n", worstOut, kOutTol,
              worstLse, kLseTol, worstMass, kMassTol);
  std::printf("kvc_cuda_attention_tests: %d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
