// Low-rank attention on the host, for the low-rank caches the block kernels cannot serve
// (CacheConfig::hostLowRank):
// - with rope, keys are stored as coefficients of pre-RoPE keys (the projection is fitted
//   where keys are low-rank and do not depend on the position). RoPE is not diagonal in the
//   basis, so q . R_p B c has no r-dimensional form for all p at once; any exact form costs
//   D x r per row, and lifting each row once (k = B c) shares that cost by all tq x GQA query
//   vectors of the call. The backend's fused kernel (RopeLogitsArgs, kvc/lowrank_ops.h) lifts
//   a tile of rows into cache-resident scratch, rotates it and dots it with the queries;
//   A backend that lifts keys itself (Backend::attendsLiftedKeys) serves the streams with
//   bases; this path then serves only the calibrating ones (rows held on the host);
// - with unequal key and value ranks (or unprojected values), key and value rows differ in
//   width, which the CPU block kernels (one row width) do not read (the CUDA kernel does:
//   Backend::attendsValueDim); without rope the logits are
//   r-dimensional (coefficients against q' = B^T q).
// Values are summed as stored (coefficients) and lifted once per output. Attention is exact f32.
// Streams, or pieces of a prefill's query tokens, run as tasks on the backend's host threads
// (Backend::parallelFor: the CPU backend's pool, the cache's `threads`): each output, lse and
// attention-mass element is computed by one task exactly as by a single thread.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>
#include <vector>

#include "cache.h"
#include "kvc/rope.h"

namespace kvc {

namespace {

// Pieces of one stream's query tokens start at a multiple of this many query vectors: the
// kernels block query vectors by 4 (rowDots) and project rows in register tiles of up to 8,
// so an aligned piece meets the same blocks as the whole call and every output is the one a
// single piece computes (bit-identical whatever the number of threads).
constexpr uint32_t kPieceQueryVectors = 8;

using HostScratch = LowRankHostScratch;

// Grows v to n elements (never shrinks: the buffers are reused by later calls).
template <class T>
void atLeast(std::vector<T>& v, uint64_t n) {
  if (v.size() < n) v.resize(n);
}

// What every task of one call reads; nothing in it changes while tasks run.
struct HostCall {
  const LowRankKernels* lr;
  Backend* backend;
  PoolView pool;
  RowCodec codec;
  const CacheConfig* config;
  const AttentionRequest* r;
  RopeSpec spec;      // of the cache, byRank from the request
  RopeView halfRope;  // the same in the kernel's half channel order
  float scale;
};

struct HostStream {
  uint32_t seq;  // index into the request's sequences
  uint32_t head;
  Stream* stream;
};

// Query tokens [t0, t1) of the request over one stream; work estimates the multiply-adds.
struct HostTask {
  uint32_t stream, t0, t1;
  double work;
};

// Softmax and value sum of one stream from its logits [M][n] (M = tq x g query vectors, scaled),
// with the contract of the block attention (causal cutoff by position, logit bias beta of
// compacted rows or nullptr for none, log-sum-exp, attention mass): the weights overwrite the
// logits, and outputs [M][RV] = P V run through the backend's weighted-sum kernel (each value
// row loaded once per four query vectors). Values are coefficients (lifted once per output by
// the caller) or unprojected rows. sums: M doubles of scratch.
void softmaxValues(const LowRankKernels& lr, float* logits, const float* values, uint32_t RV, const int32_t* positions,
                   const float* beta, uint32_t n, uint32_t g, uint32_t tq, const int32_t* cutoff, float* out, float* lse,
                   uint64_t lseTokenStride, float* scores, double* sums) {
  const uint32_t M = tq * g;
  for (uint32_t m = 0; m < M; ++m) {
    const uint32_t t = m / g;
    float* p = logits + static_cast<size_t>(m) * n;
    float mx = -std::numeric_limits<float>::infinity();
    for (uint32_t i = 0; i < n; ++i) {
      if (positions[i] > cutoff[t]) {
        p[i] = -std::numeric_limits<float>::infinity();
      } else if (beta) {
        p[i] += beta[i];
      }
      mx = std::max(mx, p[i]);
    }
    double l = 0.0;
    if (mx == -std::numeric_limits<float>::infinity()) {
      std::fill(p, p + n, 0.0f);
    } else {
      l = lr.expShift(p, n, mx);
    }
    sums[m] = l;
    if (lse) lse[t * lseTokenStride + m % g] = l > 0 ? mx + static_cast<float>(std::log(l)) : -std::numeric_limits<float>::infinity();
    const float inv = l > 0 ? static_cast<float>(1.0 / l) : 0.0f;
    if (scores) {
      for (uint32_t i = 0; i < n; ++i) scores[i] += p[i] * inv;
    }
  }
  lr.weightedSum(logits, n, M, n, values, RV, out);
  for (uint32_t m = 0; m < M; ++m) {
    const float inv = sums[m] > 0 ? static_cast<float>(1.0 / sums[m]) : 0.0f;
    for (uint32_t d = 0; d < RV; ++d) out[static_cast<size_t>(m) * RV + d] *= inv;
  }
}

// Channel d of the half order holds channel halfOrder(d) of a model with interleaved pairs:
// pairs (2i, 2i+1) become (i, i + dims/2), so the RoPE kernel runs on contiguous halves.
uint32_t halfOrderSource(uint32_t d, uint32_t dims) {
  if (d >= dims) return d;
  return d < dims / 2 ? 2 * d : 2 * (d - dims / 2) + 1;
}

// Attention of query tokens [t0, t1) of the request over one stream, into the request's
// outputs (and its lse and attention mass): one task of the call, on scratch w.
Status attendStream(const HostCall& c, const HostStream& hs, uint32_t t0, uint32_t t1, HostScratch& w) {
  const LowRankKernels& lr = *c.lr;
  const CacheConfig& config = *c.config;
  const AttentionRequest& r = *c.r;
  const RopeSpec& spec = c.spec;
  const uint32_t D = config.headDim, R = config.storedDim();
  const uint32_t g = config.queriesPerHead(), tq = t1 - t0, M = tq * g;
  const uint64_t tokenStride = static_cast<uint64_t>(config.queryHeads) * D;
  const uint64_t seqStride = tokenStride * r.tq;
  const uint32_t i = hs.seq, h = hs.head;
  Stream& s = *hs.stream;
  auto source = [&](uint32_t d) { return spec.dims != 0 && spec.style == 0 ? halfOrderSource(d, spec.dims) : d; };

  const uint32_t n = static_cast<uint32_t>(s.rows());
  const uint32_t first = n - r.tq + t0;  // row of query token t0
  // Values as stored: [n][RV] coefficients (lifted after the weighted sum, once per
  // output) or [n][D] rows of a calibrating stream.
  const uint32_t RV = s.basis ? config.valueStoredDim() : D;
  int32_t* positions = w.positions.data();
  const float* rowBeta = nullptr;  // calibrating rows are never compacted
  if (!s.basis) {
    std::memcpy(positions, s.pendingPositions.data(), 4ull * n);
    s.held.read(n, D, w.keys.data(), w.values.data());
  } else {
    StreamView view{s.blocks.data(), s.length};
    KVC_RETURN_IF_ERROR(c.backend->readRows(c.pool, c.codec, view, 0, n, w.keys.data(), w.values.data(), w.beta.data(), positions));
    rowBeta = w.beta.data();
  }
  // [n][KW]: full rows of a calibrating stream, else coefficients
  const float* keyRows = w.keys.data();
  const float* valueRows = w.values.data();
  int32_t* cutoff = w.cutoff.data();
  for (uint32_t t = 0; t < tq; ++t) cutoff[t] = positions[first + t];
  float* queries = w.queries.data();
  const float* q = r.queries + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
  for (uint32_t t = 0; t < tq; ++t) std::memcpy(queries + static_cast<size_t>(t) * g * D, q + t * tokenStride, 4ull * g * D);
  float* logits = w.logits.data();
  if (spec.dims != 0) {
    // Each query vector of the group at the position (or rank) of its token, then in the
    // kernel's half channel order; keys at their stored positions (or rank in the stream).
    float* rotated = w.rotated.data();
    const float* cs;
    const float* sn;
    for (uint32_t t = 0; t < tq; ++t) {
      const uint32_t p = spec.byRank ? first + t : static_cast<uint32_t>(cutoff[t]);
      ropeLevelAngles(c.halfRope.cosTable, c.halfRope.sinTable, spec.dims, p, w.cBuf.data(), w.sBuf.data(), &cs, &sn);
      for (uint32_t j = 0; j < g; ++j) {
        const size_t m = static_cast<size_t>(t) * g + j;
        for (uint32_t d = 0; d < D; ++d) rotated[m * D + d] = queries[m * D + source(d)];
        ropeApply(rotated + m * D, c.halfRope.spec, cs, sn);
      }
    }
    uint32_t* ropePositions = w.ropePositions.data();
    for (uint32_t k = 0; k < n; ++k) ropePositions[k] = spec.byRank ? k : static_cast<uint32_t>(positions[k]);
    // A calibrating stream's rows are their own lift: an identity "basis" of rank D.
    const uint32_t KW = s.basis ? R : D;
    float* basisT = w.basisT.data();
    for (uint32_t d = 0; d < D; ++d) {
      for (uint32_t j = 0; j < KW; ++j) {
        basisT[static_cast<size_t>(j) * D + d] = s.basis ? s.basis->keys[static_cast<size_t>(source(d)) * R + j] : (source(d) == j ? 1.0f : 0.0f);
      }
    }
    RopeLogitsArgs a;
    a.rows = n, a.headDim = D, a.rank = KW;
    a.coef = keyRows, a.coefStride = KW;
    a.basisT = basisT;
    a.positions = ropePositions;
    a.rope = c.halfRope;
    a.queries = rotated, a.M = M, a.scale = c.scale;
    a.logits = logits, a.logitStride = n;
    a.scratch = w.rope.data();
    lr.ropeLogits(a);
  } else if (s.basis) {
    // Keys already hold RoPE: logits in r dimensions against q' = B^T q.
    float* projected = w.projected.data();
    lr.project(queries, D, M, D, s.basis->keys.data(), R, 1.0f, projected, R);
    lr.rowDots(keyRows, R, n, R, projected, M, c.scale, logits, n);
  } else {
    lr.rowDots(keyRows, D, n, D, queries, M, c.scale, logits, n);
  }
  float* scores = r.accumulateScores ? s.scores.data() : nullptr;  // sized by the caller
  float* lse = r.lse ? r.lse + (static_cast<uint64_t>(i) * r.tq + t0) * config.queryHeads + static_cast<uint64_t>(h) * g : nullptr;
  float* out = w.out.data();
  softmaxValues(lr, logits, valueRows, RV, positions, rowBeta, n, g, tq, cutoff, out, lse, config.queryHeads, scores, w.sums.data());
  float* o = r.out + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
  for (uint32_t t = 0; t < tq; ++t) {
    const float* src = out + static_cast<size_t>(t) * g * RV;
    float* dst = o + t * tokenStride;
    if (s.basis && !config.fullValues()) {
      lr.lift(src, RV, g, RV, s.basis->values.data(), D, dst, D);
    } else {
      std::memcpy(dst, src, 4ull * g * D);
    }
  }
  return Status::ok();
}

}  // namespace

Status Cache::attentionChunkLowRankHost(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1,
                                        bool calibratingOnly) {
  const uint32_t heads = config_.kvHeads, D = config_.headDim, R = config_.storedDim();
  const uint32_t g = config_.queriesPerHead(), tq = t1 - t0;
  RopeSpec spec = config_.rope();
  spec.byRank = r.rankPositions;
  if (spec.dims != 0 && hostRopeCos_.empty()) {
    // Tables in the half order of the fused kernel (RopeLogitsArgs): the channels of each row
    // permuted for interleaved models.
    std::vector<float> c, sn;
    buildRopeTables(spec, &c, &sn);
    hostRopeCos_.resize(c.size());
    hostRopeSin_.resize(sn.size());
    for (size_t row = 0; row < c.size() / spec.dims; ++row) {
      for (uint32_t d = 0; d < spec.dims; ++d) {
        const uint32_t src = spec.style == 0 ? halfOrderSource(d, spec.dims) : d;
        hostRopeCos_[row * spec.dims + d] = c[row * spec.dims + src];
        hostRopeSin_[row * spec.dims + d] = sn[row * spec.dims + src];
      }
    }
  }
  HostCall call;
  call.lr = lowRank_;
  call.backend = backend_.get();
  call.pool = pool();
  call.codec = codec();
  call.config = &config_;
  call.r = &r;
  call.spec = spec;
  call.halfRope.spec = spec;
  call.halfRope.spec.style = 1;
  call.halfRope.cosTable = hostRopeCos_.data();
  call.halfRope.sinTable = hostRopeSin_.data();
  call.scale = 1.0f / std::sqrt(static_cast<float>(D));

  std::vector<HostStream> streams;
  bool repeated = false;  // a stream twice in the call (its attention mass summed by one thread)
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq = sequences_.at(ids[i]).get();
    for (uint32_t h = 0; h < heads; ++h) {
      Stream& s = seq->stream(r.layer, heads, h);
      if (calibratingOnly && s.basis) continue;
      if (r.accumulateScores) {
        if (s.scores.size() != static_cast<size_t>(s.rows())) s.scores.resize(s.rows(), 0.0f);
        for (const HostStream& other : streams) repeated = repeated || other.stream == &s;
      }
      streams.push_back(HostStream{i, h, &s});
    }
  }
  if (streams.empty()) return Status::ok();

  // Tasks by work: one per stream, or, when a prefill has fewer streams than twice the
  // threads, pieces of its query tokens (each lifts the stream's keys again, which the
  // tq x g query vectors of a prefill outweigh). Attention mass sums over all query vectors
  // in order, so a scored stream stays whole. Longest first, so the last tasks are short.
  const uint32_t threads = repeated ? 1 : std::max(1u, backend_->hostThreads());
  const uint32_t granule = kPieceQueryVectors / std::gcd(kPieceQueryVectors, g);  // tokens
  uint32_t pieces = 1;
  if (threads > 1 && tq > 1 && !r.accumulateScores && streams.size() < 2ull * threads) {
    pieces = std::min<uint32_t>(static_cast<uint32_t>((2ull * threads + streams.size() - 1) / streams.size()), (tq + granule - 1) / granule);
  }
  const uint32_t pieceTokens = ((tq + pieces - 1) / pieces + granule - 1) / granule * granule;
  std::vector<HostTask> tasks;
  uint64_t keyFloats = 0, valueFloats = 0, rowsMax = 0, logitFloats = 0;
  for (uint32_t k = 0; k < streams.size(); ++k) {
    const Stream& s = *streams[k].stream;
    const uint64_t n = static_cast<uint64_t>(s.rows());
    const uint32_t KW = s.basis ? R : D, RV = s.basis ? config_.valueStoredDim() : D;
    keyFloats = std::max(keyFloats, n * KW);
    valueFloats = std::max(valueFloats, n * RV);
    rowsMax = std::max(rowsMax, n);
    const double lift = spec.dims != 0 ? static_cast<double>(KW) * D : 0.0;
    const double perQuery = (spec.dims != 0 || !s.basis ? D : R) + RV;
    for (uint32_t a = t0; a < t1; a += pieceTokens) {
      const uint32_t b = std::min(t1, a + pieceTokens);
      tasks.push_back(HostTask{k, a, b, static_cast<double>(n) * (lift + (b - a) * g * perQuery)});
    }
  }
  const uint32_t maxM = std::min(pieceTokens, tq) * g;
  logitFloats = rowsMax * maxM;
  // Buffers sized on the calling thread before the run (tasks never allocate: an out-of-memory
  // stays on the caller). One task runs on the caller: one set; otherwise any participant may
  // claim a task.
  const bool parallel = threads > 1 && tasks.size() > 1;
  const uint32_t sets = parallel ? threads : 1;
  if (lowRankHostScratch_.size() < sets) lowRankHostScratch_.resize(sets);
  for (uint32_t p = 0; p < sets; ++p) {
    HostScratch& w = lowRankHostScratch_[p];
    atLeast(w.keys, keyFloats), atLeast(w.values, valueFloats);
    atLeast(w.beta, rowsMax), atLeast(w.positions, rowsMax);
    atLeast(w.logits, logitFloats);
    atLeast(w.queries, static_cast<uint64_t>(maxM) * D), atLeast(w.out, static_cast<uint64_t>(maxM) * D);
    atLeast(w.cutoff, maxM), atLeast(w.sums, maxM);
    if (spec.dims != 0) {
      atLeast(w.rotated, static_cast<uint64_t>(maxM) * D);
      atLeast(w.ropePositions, rowsMax);
      atLeast(w.basisT, static_cast<uint64_t>(D) * D);
      atLeast(w.rope, ropeLogitsScratchFloats(D, spec.dims, maxM));
      atLeast(w.cBuf, spec.dims), atLeast(w.sBuf, spec.dims);
    } else {
      atLeast(w.projected, static_cast<uint64_t>(maxM) * R);
    }
  }
  std::vector<uint32_t> order(tasks.size());
  for (uint32_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return tasks[a].work > tasks[b].work; });
  std::vector<Status> status(tasks.size());
  std::vector<std::exception_ptr> thrown(tasks.size());
  auto run = [&](uint32_t j, uint32_t participant) {
    const HostTask& t = tasks[order[j]];
    try {
      status[order[j]] = attendStream(call, streams[t.stream], t.t0, t.t1, lowRankHostScratch_[participant]);
    } catch (...) {
      thrown[order[j]] = std::current_exception();
    }
  };
  if (parallel) {
    backend_->parallelFor(static_cast<uint32_t>(tasks.size()), run);
  } else {
    for (uint32_t j = 0; j < tasks.size(); ++j) run(j, 0);
  }
  // The first failure in stream order, as the loop over streams reported it.
  for (size_t k = 0; k < tasks.size(); ++k) {
    if (thrown[k]) std::rethrow_exception(thrown[k]);
    KVC_RETURN_IF_ERROR(status[k]);
  }
  return Status::ok();
}

uint64_t Cache::hostScratchBytes() const {
  uint64_t bytes = (lowRankQueryScratch_.capacity() + lowRankOutScratch_.capacity()) * sizeof(float);
  for (const LowRankHostScratch& w : lowRankHostScratch_) bytes += w.bytes();
  return bytes;
}

void Cache::trimWorkspace() {
  backend_->trimWorkspace();
  // Attention runs on the calling (main) thread, as this does: no call is using them now.
  std::vector<LowRankHostScratch>().swap(lowRankHostScratch_);
  std::vector<float>().swap(lowRankQueryScratch_);
  std::vector<float>().swap(lowRankOutScratch_);
}

}  // namespace kvc
