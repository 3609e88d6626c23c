// The CPU backend: host pool memory, row encoding on append, split-K attention over the
// thread pool with the widest kernel table the CPU and the codec allow.
#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#include "compaction/compact_streams.h"
#include "cpu_features.h"
#include "eviction/row_scores.h"
#include "hadamard.h"
#include "kernel_table.h"
#include "lowrank/lowrank_cpu.h"
#include "kvc/backend.h"
#include "kvc/key_summary.h"
#include "append_rows.h"
#include "pool_memory.h"
#include "row_codec_reference.h"
#include "sparse/key_summaries.h"
#include "thread_pool.h"

namespace kvc {

namespace cpu {
namespace {

// Rows per split-K task. Fixed (not derived from the thread count) so that results are
// bit-identical whatever `threads` is; long enough that merging costs nothing.
constexpr uint32_t kRowsPerTask = 2048;

}  // namespace

const KernelTable& pickKernels(const RowCodec& codec) {
  const CpuFeatures& f = cpuFeatures();
  if (f.avx512) {
    if (const KernelTable* t = avx512Kernels(); t && t->supports(codec)) return *t;
  }
  if (f.avx2) {
    if (const KernelTable* t = avx2Kernels(); t && t->supports(codec)) return *t;
  }
  return portableKernels();
}

namespace {

// precision 'fast' applies to quantized keys (other formats compute exactly): with AVX-512
// VNNI for the group sizes of the vector kernels, else the portable integer scorer of the
// table (the same logits, see fast_keys.inl).
AttentionRangeFn pickFast(const KernelTable& kt, const RowCodec& c) {
  const bool quantizedKeys = c.keyStorage == Storage::kInt8 || c.keyStorage == Storage::kInt4;
  const bool vectorGroup = c.groupSize == 32 || c.groupSize == 64 || c.groupSize == 128;
  if (!quantizedKeys) return nullptr;
  const KernelTable* table = &kt;
  if (cpuFeatures().avx512vnni && kt.width == 16 && vectorGroup) {
    if (const KernelTable* vnni = avx512VnniFastKernels()) table = vnni;
  }
  return table->attentionFast[static_cast<int>(c.keyStorage)][static_cast<int>(c.valueStorage)];
}

struct Task {
  uint32_t stream;
  uint32_t blockBegin, blockEnd;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& o)
      : pool_(o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency())) {}

  const char* name() const override { return "cpu"; }
  // Not ok when the pool's threads could not be started (see createCpuBackend).
  const Status& threadStatus() const { return pool_.status(); }

  Status reservePool(uint64_t capacityBlocks, uint32_t blockBytes) override {
    blockBytes_ = blockBytes;
    capacityBlocks_ = capacityBlocks;
    return memory_.reserve(capacityBlocks * blockBytes);
  }
  Status reserveSummaries(uint32_t entryBytes) override {
    if (summaryBytes_ != 0) return invalidArgument("reserveSummaries: the summaries are already reserved");
    if (entryBytes == 0) return invalidArgument("reserveSummaries: entryBytes must be positive");
    KVC_RETURN_IF_ERROR(summaries_.reserve(capacityBlocks_ * entryBytes));
    summaryBytes_ = entryBytes;
    return summaries_.commit(committedBlocks_ * summaryBytes_);
  }
  Status commitPool(uint64_t blocks) override {
    KVC_RETURN_IF_ERROR(memory_.commit(blocks * blockBytes_));
    if (summaryBytes_) KVC_RETURN_IF_ERROR(summaries_.commit(blocks * summaryBytes_));
    committedBlocks_ = std::max(committedBlocks_, blocks);
    return Status::ok();
  }
  uint8_t* poolBase() override { return memory_.base(); }
  uint8_t* summaryBase() override { return summaries_.base(); }
  uint64_t committedBytes() const override { return memory_.committed() + summaries_.committed(); }

  Status append(const AppendParams& p) override { return appendRows(p, pickKernels(p.codec), &rowScratch_); }

  Status attention(const AttentionParams& params) override {
    const RowCodec& c = params.codec;
    const KernelTable& kt = pickKernels(c);
    AttentionRangeFn fn = kt.attention[static_cast<int>(c.keyStorage)][static_cast<int>(c.valueStorage)];
    if (params.fast) {
      if (const AttentionRangeFn fast = pickFast(kt, c)) fn = fast;
    }
    const uint32_t D = c.headDim, B = params.pool.layout.blockSize;
    const uint32_t M = params.tq * params.queriesPerHead;
    AttentionParams p = params;

    // Per stream: causal cutoffs (positions of the last tq rows) and, with rotated keys,
    // rotated copies of the queries (tokenStride then addresses the copy).
    streams_.assign(params.streams, params.streams + params.streamCount);
    qpos_.resize(static_cast<size_t>(params.streamCount) * params.tq);
    for (uint32_t s = 0; s < params.streamCount; ++s) {
      int32_t* qp = qpos_.data() + static_cast<size_t>(s) * params.tq;
      if (streams_[s].queryPositions) {
        std::memcpy(qp, streams_[s].queryPositions, 4ull * params.tq);
      } else {
        readPositions(params.pool, streams_[s].kv, static_cast<uint32_t>(streams_[s].kv.length) - params.tq, params.tq, qp);
      }
    }
    const RopeSpec& rope = params.rope.spec;
    if (rope.dims != 0) {
      prepareRopeTables(rope);
      p.rope.cosTable = ropeCos_.data();
      p.rope.sinTable = ropeSin_.data();
    }
    if (c.keySigns || rope.dims != 0) {
      rotatedQueries_.resize(static_cast<size_t>(params.streamCount) * M * D);
      RopeRotator rotator(rope);
      for (uint32_t s = 0; s < params.streamCount; ++s) {
        float* dst = rotatedQueries_.data() + static_cast<size_t>(s) * M * D;
        for (uint32_t m = 0; m < M; ++m) {
          const float* src = streams_[s].queries + (m / params.queriesPerHead) * params.tokenStride +
                             (m % params.queriesPerHead) * D;
          std::memcpy(dst + static_cast<size_t>(m) * D, src, 4ull * D);
          if (c.keySigns) rotateForward(dst + static_cast<size_t>(m) * D, c.keySigns, D);
          if (rope.dims != 0) {
            // Queries get RoPE at their own position (in double, each token's angles once).
            const uint32_t t = m / params.queriesPerHead;
            const AttentionStream& st = streams_[s];
            const int32_t first = st.firstQueryRow >= 0 ? st.firstQueryRow : st.kv.length - static_cast<int32_t>(params.tq);
            const int64_t position = rope.byRank ? first + static_cast<int64_t>(t) : qpos_[static_cast<size_t>(s) * params.tq + t];
            rotator.rotate(dst + static_cast<size_t>(m) * D, position);
          }
        }
        streams_[s].queries = dst;
      }
      p.tokenStride = static_cast<uint64_t>(params.queriesPerHead) * D;
    }

    tasks_.clear();
    taskStart_.resize(params.streamCount + 1);
    const uint32_t blocksPerTask = std::max(1u, kRowsPerTask / B);
    for (uint32_t s = 0; s < params.streamCount; ++s) {
      taskStart_[s] = static_cast<uint32_t>(tasks_.size());
      const uint32_t blocks = (static_cast<uint32_t>(streams_[s].kv.length) + B - 1) / B;
      for (uint32_t b = 0; b < blocks; b += blocksPerTask) tasks_.push_back({s, b, std::min(blocks, b + blocksPerTask)});
    }
    taskStart_[params.streamCount] = static_cast<uint32_t>(tasks_.size());

    const size_t partialFloats = static_cast<size_t>(M) * (D + 2);
    partials_.resize(tasks_.size() * partialFloats);
    // Attention mass needs every logit until the final log-sum-exp is known: keep them
    // ([M][length] per scored stream; the core splits huge prefills so this stays bounded).
    logitOffsets_.assign(params.streamCount, SIZE_MAX);
    size_t logitFloats = 0;
    for (uint32_t s = 0; s < params.streamCount; ++s) {
      if (!streams_[s].scores) continue;
      logitOffsets_[s] = logitFloats;
      logitFloats += static_cast<size_t>(M) * static_cast<size_t>(streams_[s].kv.length);
    }
    logits_.resize(logitFloats);
    const uint32_t participants = pool_.size();
    const size_t scratchFloats = attentionCallScratchFloats(M, c, B);
    scratch_.resize(static_cast<size_t>(participants) * scratchFloats);
    p.streams = streams_.data();
    auto runTask = [&](uint32_t i, uint32_t participant) {
      const Task& t = tasks_[i];
      float* part = partials_.data() + i * partialFloats;
      fn(p, streams_[t.stream], t.blockBegin, t.blockEnd, qpos_.data() + static_cast<size_t>(t.stream) * params.tq,
         scratch_.data() + static_cast<size_t>(participant) * scratchFloats, part, part + M, part + 2 * M,
         logitOffsets_[t.stream] == SIZE_MAX ? nullptr : logits_.data() + logitOffsets_[t.stream]);
    };
    pool_.run(static_cast<uint32_t>(tasks_.size()), runTask);

    lse_.resize(M);
    for (uint32_t s = 0; s < params.streamCount; ++s) {
      merge(p, s, M, params.tokenStride, lse_.data());
      if (streams_[s].scores) {
        kt.accumulateMass(logits_.data() + logitOffsets_[s], static_cast<uint64_t>(streams_[s].kv.length), lse_.data(), M,
                          static_cast<uint32_t>(streams_[s].kv.length), streams_[s].scores);
      }
    }
    return Status::ok();
  }

  Status copyBlocks(const PoolView& pool, const int32_t* src, const int32_t* dst, uint32_t count) override {
    const uint64_t bytes = pool.layout.blockBytes;
    for (uint32_t i = 0; i < count; ++i) std::memcpy(pool.base + dst[i] * bytes, pool.base + src[i] * bytes, bytes);
    if (pool.summaries && pool.layout.summaryBytes) {
      for (uint32_t i = 0; i < count; ++i) {
        std::memcpy(summaryEntry(pool, dst[i]), summaryEntry(pool, src[i]), pool.layout.summaryBytes);
      }
    }
    return Status::ok();
  }

  Status readRows(const PoolView& pool, const RowCodec& c, const StreamView& stream, uint32_t start, uint32_t count,
                  float* keys, float* values, float* beta, int32_t* positions) override {
    const BlockLayout& L = pool.layout;
    const KernelTable& kt = pickKernels(c);
    const uint32_t D = c.headDim;
    // Whole runs of rows within a block at a time, through the SIMD decoders.
    for (uint32_t i = 0; i < count;) {
      const uint32_t r = start + i, slot = r % L.blockSize;
      const uint32_t n = std::min(count - i, L.blockSize - slot);
      const uint8_t* block = pool.base + static_cast<uint64_t>(stream.blockTable[r / L.blockSize]) * L.blockBytes;
      if (keys) {
        float* k = keys + static_cast<uint64_t>(i) * D;
        kt.decode[static_cast<int>(c.keyStorage)](block + static_cast<uint64_t>(slot) * L.keyRowBytes, n, L.keyRowBytes, D,
                                                  c.groupSize, k);
        if (c.keySigns) {
          for (uint32_t j = 0; j < n; ++j) rotateInverse(k + static_cast<uint64_t>(j) * D, c.keySigns, D);
        }
      }
      if (values) {
        const uint32_t VD = c.valueDim ? c.valueDim : D;
        float* v = values + static_cast<uint64_t>(i) * VD;
        kt.decode[static_cast<int>(c.valueStorage)](block + L.valuesOffset + static_cast<uint64_t>(slot) * L.valueRowBytes, n,
                                                    L.valueRowBytes, VD, c.groupSize, v);
        if (c.valueSigns) {
          for (uint32_t j = 0; j < n; ++j) rotateInverse(v + static_cast<uint64_t>(j) * D, c.valueSigns, D);
        }
      }
      if (beta) std::memcpy(beta + i, reinterpret_cast<const float*>(block + L.betaOffset) + slot, 4ull * n);
      if (positions) std::memcpy(positions + i, reinterpret_cast<const int32_t*>(block + L.positionsOffset) + slot, 4ull * n);
      i += n;
    }
    return Status::ok();
  }

  Status gatherRows(const PoolView& pool, const StreamView& src, const int32_t* srcRows, uint32_t count,
                    const StreamView& dst, uint32_t dstStart) override {
    const BlockLayout& L = pool.layout;
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t rs = static_cast<uint32_t>(srcRows[i]), rd = dstStart + i;
      const uint8_t* a = pool.base + static_cast<uint64_t>(src.blockTable[rs / L.blockSize]) * L.blockBytes;
      uint8_t* b = pool.base + static_cast<uint64_t>(dst.blockTable[rd / L.blockSize]) * L.blockBytes;
      copyRow(L, a, rs % L.blockSize, b, rd % L.blockSize);
    }
    return Status::ok();
  }

  Status rewriteRows(const PoolView& pool, const RowCodec& c, const StreamView& stream, uint32_t start, uint32_t count,
                     const float* values, const float* beta) override {
    const BlockLayout& L = pool.layout;
    const KernelTable& kt = pickKernels(c);
    // Value rows of valueDim floats (low-rank values; RowCodec::valueDim, here also read by
    // compaction); rotation implies valueDim == 0.
    const uint32_t D = c.valueDim ? c.valueDim : c.headDim;
    rowScratch_.resize(D);
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t r = start + i, slot = r % L.blockSize;
      uint8_t* block = pool.base + static_cast<uint64_t>(stream.blockTable[r / L.blockSize]) * L.blockBytes;
      if (values) {
        const float* x = values + static_cast<uint64_t>(i) * D;
        if (c.valueSigns) {
          std::memcpy(rowScratch_.data(), x, 4ull * D);
          rotateForward(rowScratch_.data(), c.valueSigns, D);
          x = rowScratch_.data();
        }
        kt.encode[static_cast<int>(c.valueStorage)](x, 1, D, c.groupSize,
                                                    block + L.valuesOffset + static_cast<uint64_t>(slot) * L.valueRowBytes,
                                                    L.valueRowBytes);
      }
      if (beta) reinterpret_cast<float*>(block + L.betaOffset)[slot] = beta[i];
    }
    return Status::ok();
  }

  // ---- sparse decode: sparse/key_summaries.cpp ----
  Status summarizeBlocks(const PoolView& pool, const RowCodec& codec, const RopeSpec& rope, const SummaryJob* jobs,
                         uint32_t count) override {
    RopeView view;
    view.spec = rope;
    if (rope.dims != 0) {
      prepareRopeTables(rope);
      view.cosTable = ropeCos_.data();
      view.sinTable = ropeSin_.data();
    }
    return cpu::summarizeBlocks(pool, codec, view, jobs, count);
  }
  Status blockBounds(const BlockBoundsParams& params) override { return cpu::blockBounds(pool_, params); }

  // ---- compaction and eviction numerics: compaction/compact_streams.cpp, eviction/row_scores.cpp ----
  Status compactStreams(const PoolView& pool, const RowCodec& codec, const CompactionStreamInput* streams, uint32_t count,
                        const compaction::Options& options, const CompactionControl& control,
                        CompactionStreamReport* reports, std::unique_ptr<CompactionFit>* fit) override {
    return cpu::compactStreams(*this, compaction_, pool, codec, streams, count, options, control, reports, fit);
  }
  Status applyCompactionFit(const PoolView& pool, const RowCodec& codec, const CompactionFit& fit, uint32_t index,
                            const StreamView& rebuilt) override {
    return cpu::applyCompactionFit(*this, pool, codec, fit, index, rebuilt);
  }
  Status rowScores(const PoolView& pool, const RowCodec& codec, const RowScoreInput* streams, uint32_t count,
                   float* const* scores) override {
    return cpu::rowScores(*this, pool_, pool, codec, streams, count, scores);
  }
  Status selectRows(const PoolView& pool, const RowCodec& codec, const RowSelectInput* streams, uint32_t count,
                    std::vector<int32_t>* keep) override {
    return cpu::selectRows(*this, pool_, pool, codec, streams, count, keep);
  }
  const LowRankKernels* lowRank() const override { return &lowRankKernels(); }
  uint32_t hostThreads() const override { return pool_.size(); }
  void parallelFor(uint32_t tasks, const std::function<void(uint32_t, uint32_t)>& fn) override { pool_.run(tasks, fn); }
  uint64_t workspaceBytes() const override { return compaction_.bytes(); }
  void trimWorkspace() override { compaction_.trim(); }

  Status readRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count, uint8_t* keyRows,
                     uint8_t* valueRows, float* beta, int32_t* positions) override {
    const BlockLayout& L = pool.layout;
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t r = start + i, slot = r % L.blockSize;
      const uint8_t* block = pool.base + static_cast<uint64_t>(stream.blockTable[r / L.blockSize]) * L.blockBytes;
      std::memcpy(keyRows + static_cast<uint64_t>(i) * L.keyRowBytes, block + static_cast<uint64_t>(slot) * L.keyRowBytes, L.keyRowBytes);
      std::memcpy(valueRows + static_cast<uint64_t>(i) * L.valueRowBytes,
                  block + L.valuesOffset + static_cast<uint64_t>(slot) * L.valueRowBytes, L.valueRowBytes);
      beta[i] = reinterpret_cast<const float*>(block + L.betaOffset)[slot];
      positions[i] = reinterpret_cast<const int32_t*>(block + L.positionsOffset)[slot];
    }
    return Status::ok();
  }

  Status writeRawRows(const PoolView& pool, const StreamView& stream, uint32_t start, uint32_t count,
                      const uint8_t* keyRows, const uint8_t* valueRows, const float* beta,
                      const int32_t* positions) override {
    const BlockLayout& L = pool.layout;
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t r = start + i, slot = r % L.blockSize;
      uint8_t* block = pool.base + static_cast<uint64_t>(stream.blockTable[r / L.blockSize]) * L.blockBytes;
      std::memcpy(block + static_cast<uint64_t>(slot) * L.keyRowBytes, keyRows + static_cast<uint64_t>(i) * L.keyRowBytes, L.keyRowBytes);
      std::memcpy(block + L.valuesOffset + static_cast<uint64_t>(slot) * L.valueRowBytes,
                  valueRows + static_cast<uint64_t>(i) * L.valueRowBytes, L.valueRowBytes);
      reinterpret_cast<float*>(block + L.betaOffset)[slot] = beta[i];
      reinterpret_cast<int32_t*>(block + L.positionsOffset)[slot] = positions[i];
    }
    return Status::ok();
  }

 private:
  static void copyRow(const BlockLayout& L, const uint8_t* a, uint32_t sa, uint8_t* b, uint32_t sb) {
    std::memcpy(b + static_cast<uint64_t>(sb) * L.keyRowBytes, a + static_cast<uint64_t>(sa) * L.keyRowBytes, L.keyRowBytes);
    std::memcpy(b + L.valuesOffset + static_cast<uint64_t>(sb) * L.valueRowBytes,
                a + L.valuesOffset + static_cast<uint64_t>(sa) * L.valueRowBytes, L.valueRowBytes);
    reinterpret_cast<float*>(b + L.betaOffset)[sb] = reinterpret_cast<const float*>(a + L.betaOffset)[sa];
    reinterpret_cast<int32_t*>(b + L.positionsOffset)[sb] = reinterpret_cast<const int32_t*>(a + L.positionsOffset)[sa];
  }

  static void readPositions(const PoolView& pool, const StreamView& s, uint32_t start, uint32_t count, int32_t* out) {
    const BlockLayout& L = pool.layout;
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t r = start + i;
      const uint8_t* block = pool.base + static_cast<uint64_t>(s.blockTable[r / L.blockSize]) * L.blockBytes;
      out[i] = reinterpret_cast<const int32_t*>(block + L.positionsOffset)[r % L.blockSize];
    }
  }

  // Combines the split-K partial states of stream s, in block order, into the output.
  void merge(const AttentionParams& p, uint32_t s, uint32_t M, uint64_t outTokenStride, float* lseOut) {
    const uint32_t D = p.codec.headDim, g = p.queriesPerHead;
    const size_t partialFloats = static_cast<size_t>(M) * (D + 2);
    const AttentionStream& st = streams_[s];
    const uint32_t first = taskStart_[s], last = taskStart_[s + 1];
    mergeAcc_.resize(D);
    for (uint32_t m = 0; m < M; ++m) {
      float mMax = -INFINITY;
      for (uint32_t i = first; i < last; ++i) mMax = std::max(mMax, partials_[i * partialFloats + m]);
      float l = 0.0f;
      std::fill(mergeAcc_.begin(), mergeAcc_.end(), 0.0f);
      if (mMax != -INFINITY) {
        for (uint32_t i = first; i < last; ++i) {
          const float* part = partials_.data() + i * partialFloats;
          if (part[m] == -INFINITY) continue;
          const float w = last - first == 1 ? 1.0f : std::exp(part[m] - mMax);
          l += w * part[M + m];
          const float* acc = part + 2 * M + static_cast<size_t>(m) * D;
          for (uint32_t d = 0; d < D; ++d) mergeAcc_[d] += w * acc[d];
        }
      }
      const uint32_t t = m / g, gi = m % g;
      float* out = st.out + t * outTokenStride + gi * D;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      for (uint32_t d = 0; d < D; ++d) out[d] = mergeAcc_[d] * inv;
      if (p.codec.valueSigns) rotateInverse(out, p.codec.valueSigns, D);
      lseOut[m] = l > 0.0f ? mMax + std::log(l) : -INFINITY;
      if (st.lse) st.lse[t * p.lseTokenStride + gi] = lseOut[m];
    }
  }

  PoolMemory memory_;
  uint32_t blockBytes_ = 0;
  uint64_t capacityBlocks_ = 0;
  uint64_t committedBlocks_ = 0;
  PoolMemory summaries_;  // key-summary side array (reserveSummaries)
  uint32_t summaryBytes_ = 0;
  ThreadPool pool_;
  CompactionWorkspace compaction_;  // the cache's one compaction workspace
  std::vector<float> rowScratch_, rotatedQueries_, partials_, scratch_, mergeAcc_, logits_, lse_;
  // RoPE tables (kvc/rope.h) of the spec they were built for; rebuilt when a call brings another.
  std::vector<float> ropeCos_, ropeSin_;
  RopeSpec ropeBuilt_;
  void prepareRopeTables(const RopeSpec& spec) {
    if (!ropeCos_.empty() && spec.theta == ropeBuilt_.theta && spec.dims == ropeBuilt_.dims && spec.style == ropeBuilt_.style) return;
    buildRopeTables(spec, &ropeCos_, &ropeSin_);
    ropeBuilt_ = spec;
  }
  std::vector<size_t> logitOffsets_;
  std::vector<int32_t> qpos_;
  std::vector<AttentionStream> streams_;
  std::vector<Task> tasks_;
  std::vector<uint32_t> taskStart_;
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> createCpuBackend(const BackendOptions& options, Status* status) {
  std::unique_ptr<cpu::CpuBackend> backend(new (std::nothrow) cpu::CpuBackend(options));
  Status s = backend ? backend->threadStatus() : outOfMemory("could not allocate the CPU backend");
  if (status) *status = s;
  if (!s.isOk()) return nullptr;
  return backend;
}

}  // namespace kvc
