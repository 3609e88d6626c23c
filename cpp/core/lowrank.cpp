// Low-rank storage (ARCHITECTURE §9, per-stream side data): each stream of a cache with
// `lowRank` stores its rows as r coefficients on its own orthonormal bases B_k, B_v
// ([headDim][r]). Attention is exact for what is stored: q' = B_k^T q once per call, logits
// q' . c over r floats (scale 1/sqrt(headDim)), values accumulated as coefficients and lifted
// once, o = B_v (sum p c). The blocks, the kernels, eviction and compaction all see r-wide
// rows (CacheConfig::storedDim); this file does the projections around them.
//
// Streaming bases (the EigenKV property): a stream without bases is calibrating: it holds
// its rows off the pool (Stream::held, HeldRows in sequence.h) and attends over them exactly
// as held: as binary16, half the bytes of f32 rows (the fitted bases and the model's quality
// are unchanged within measurement, EVALUATION.md), or as f32 in a cache that stores keys or
// values as f32 (never less precise than the cache's own rows). The append that brings it to
// calibrationRows rows fits both bases on exactly the first calibrationRows rows, each
// rounded to binary16 as if it had been held (so the bases do not depend on how the rows
// were chunked), projects every held row and writes it to blocks; from then on each append
// projects its rows. The cost of that step is one eigensolve per basis plus projecting
// calibrationRows rows.
//
// Recorded queries of a stream with bases are logged projected and scaled by sqrt(r / D), so
// that compaction and eviction, which scale by 1/sqrt(storedDim), see the true logits; with
// rope they are logged whole, with their positions (compaction/rope_stage.h).
//
// Key and value ranks may differ (value rows are valueStoredDim() wide), and a value rank of
// headDim keeps values unprojected in the cache's value format (no value basis). Caches with
// rope, and such caches on a backend whose attention reads one row width
// (Backend::attendsValueDim), attend on the host over lifted rows (lowrank_host.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "cache.h"
#include "kvc/finite.h"

namespace kvc {

namespace {

uint32_t blocksFor(int64_t rows, uint32_t blockSize) {
  return static_cast<uint32_t>((rows + blockSize - 1) / blockSize);
}

// The largest |B^T B - I| entry of a [D][r] basis.
double orthonormalityError(const float* b, uint32_t D, uint32_t r) {
  double worst = 0.0;
  for (uint32_t i = 0; i < r; ++i) {
    for (uint32_t j = i; j < r; ++j) {
      double dot = 0.0;
      for (uint32_t d = 0; d < D; ++d) dot += static_cast<double>(b[static_cast<uint64_t>(d) * r + i]) * b[static_cast<uint64_t>(d) * r + j];
      worst = std::max(worst, std::fabs(dot - (i == j ? 1.0 : 0.0)));
    }
  }
  return worst;
}

}  // namespace

void Cache::projectValueRows(const float* in, uint64_t inStride, uint32_t n, const LowRankBasis& b, float* out) const {
  const uint32_t D = config_.headDim, RV = config_.valueStoredDim();
  if (config_.fullValues()) {
    for (uint32_t i = 0; i < n; ++i) std::memcpy(out + static_cast<uint64_t>(i) * D, in + i * inStride, 4ull * D);
    return;
  }
  lowRank_->project(in, inStride, n, D, b.values.data(), RV, 1.0f, out, RV);
}

void Cache::liftValueRows(const float* coef, uint32_t n, const LowRankBasis& b, float* out) const {
  const uint32_t D = config_.headDim, RV = config_.valueStoredDim();
  if (config_.fullValues()) {
    std::memcpy(out, coef, 4ull * n * D);
    return;
  }
  lowRank_->lift(coef, RV, n, RV, b.values.data(), D, out, D);
}

Status Cache::fitStreamBases(const float* keys, const float* values, uint32_t n, LowRankBasis* out) const {
  const uint32_t D = config_.headDim, R = config_.storedDim(), RV = config_.valueStoredDim();
  out->keys.resize(static_cast<size_t>(D) * R);
  KVC_RETURN_IF_ERROR(lowRank_->fitBasis(keys, n, D, R, out->keys.data(), nullptr));
  if (config_.fullValues()) return Status::ok();
  out->values.resize(static_cast<size_t>(D) * RV);
  return lowRank_->fitBasis(values, n, D, RV, out->values.data(), nullptr);
}

// Rows to write into one stream, all or nothing with the other writes of a call.
struct Cache::StreamWrite {
  Stream* stream = nullptr;
  bool replace = false;                // rebuild the stream from these rows, else append after its rows
  uint32_t rows = 0;
  const float* keys = nullptr;         // [rows][storedDim] coefficients
  const float* values = nullptr;       // [rows][valueStoredDim]
  const int32_t* positions = nullptr;  // [rows]
  const float* beta = nullptr;         // [rows] or nullptr for 0
  // Planned by writeStreams.
  std::vector<int32_t> table;
  int32_t cowFrom = -1;                // the shared last block a private copy replaces
};

// Allocates every block first, writes into blocks no visible stream reads (fresh ones, or
// the copy of a shared last block), and changes block tables and lengths only after the last
// backend call succeeded (the transaction rule of cache.h).
Status Cache::writeStreams(std::vector<StreamWrite>& writes) {
  const uint32_t B = config_.blockSize;
  uint32_t needed = 0;
  for (StreamWrite& w : writes) {
    if (w.rows == 0) continue;
    const Stream& s = *w.stream;
    if (w.replace) {
      needed += blocksFor(w.rows, B);
    } else {
      if (static_cast<int64_t>(s.length) + w.rows > INT32_MAX) return invalidArgument("stream length exceeds 2^31 rows");
      needed += blocksFor(s.length + static_cast<int64_t>(w.rows), B) - blocksFor(s.length, B);
      if (s.length % B != 0 && pool_.refCount(s.blocks.back()) > 1) ++needed;
    }
  }
  std::vector<int32_t> fresh;
  KVC_RETURN_IF_ERROR(allocateBlocks(needed, &fresh));
  size_t next = 0;
  std::vector<int32_t> cowSrc, cowDst;
  for (StreamWrite& w : writes) {
    if (w.rows == 0) continue;
    const Stream& s = *w.stream;
    if (w.replace) {
      w.table.assign(fresh.begin() + static_cast<std::ptrdiff_t>(next), fresh.begin() + static_cast<std::ptrdiff_t>(next + blocksFor(w.rows, B)));
      next += w.table.size();
      continue;
    }
    w.table = s.blocks;
    if (s.length % B != 0 && pool_.refCount(s.blocks.back()) > 1) {
      w.cowFrom = s.blocks.back();
      cowSrc.push_back(s.blocks.back());
      cowDst.push_back(fresh[next]);
      w.table.back() = fresh[next++];
    }
    const uint32_t add = blocksFor(s.length + static_cast<int64_t>(w.rows), B) - blocksFor(s.length, B);
    for (uint32_t i = 0; i < add; ++i) w.table.push_back(fresh[next++]);
  }
  auto rollback = [&](const Status& status) {
    for (int32_t b : fresh) pool_.release(b);
    return status;
  };
  if (!cowSrc.empty()) {
    const Status status = backend_->copyBlocks(pool(), cowSrc.data(), cowDst.data(), static_cast<uint32_t>(cowSrc.size()));
    if (!status.isOk()) return rollback(status);
  }
  for (StreamWrite& w : writes) {
    if (w.rows == 0) continue;
    const int32_t start = w.replace ? 0 : w.stream->length;
    const int32_t* table = w.table.data();
    AppendParams p;
    p.pool = pool();
    p.codec = codec();
    p.streamCount = 1;
    p.tokens = w.rows;
    p.blockTables = &table;
    p.startRow = &start;
    p.inputType = InputType::kF32;
    p.keys = w.keys;
    p.values = w.values;
    p.positions = w.positions;
    p.beta = w.beta;
    const Status status = backend_->append(p);
    if (!status.isOk()) return rollback(status);
  }
  // Commit: nothing below can fail.
  for (StreamWrite& w : writes) {
    if (w.rows == 0) continue;
    Stream& s = *w.stream;
    if (w.replace) {
      for (int32_t b : s.blocks) pool_.release(b);
      s.length = static_cast<int32_t>(w.rows);
    } else {
      if (w.cowFrom >= 0) pool_.release(w.cowFrom);  // the shared block keeps its other owners
      s.length += static_cast<int32_t>(w.rows);
    }
    s.blocks = std::move(w.table);
  }
  return Status::ok();
}

Status Cache::appendLowRank(Sequence* seq, uint32_t layer, const AppendInput& input, const int32_t* positions) {
  const LowRankKernels& lr = *lowRank_;
  const uint32_t heads = config_.kvHeads, D = config_.headDim, r = config_.storedDim(), rv = config_.valueStoredDim();
  const uint32_t T = input.tokens;
  const uint64_t elems = static_cast<uint64_t>(T) * heads * D;
  // Projection needs f32; f16 input is widened once (the rows are rounded when stored anyway).
  std::vector<float> wideKeys, wideValues;
  const float* keys = static_cast<const float*>(input.keys);
  const float* values = static_cast<const float*>(input.values);
  if (input.type == InputType::kF16) {
    wideKeys.resize(elems);
    wideValues.resize(elems);
    const uint16_t* hk = static_cast<const uint16_t*>(input.keys);
    const uint16_t* hv = static_cast<const uint16_t*>(input.values);
    for (uint64_t i = 0; i < elems; ++i) {
      wideKeys[i] = halfToFloat(hk[i]);
      wideValues[i] = halfToFloat(hv[i]);
    }
    keys = wideKeys.data();
    values = wideValues.data();
  }
  // Non-finite input is refused before anything changes. Rows of a stream with a basis reach
  // the pool as coefficients, and the backend's append rejects non-finite rows; a NaN or Inf
  // anywhere in an input row makes every coefficient of that row NaN or Inf (NaN propagates,
  // Inf · 0 is NaN, Inf − Inf is NaN). So when every stream projects, the whole input is
  // scanned only after a refused write, to name the token and head; rows that will be held
  // unprojected (calibration) are scanned first.
  const auto firstBadInputRow = [&]() -> int64_t {
    const int64_t bad = firstNonFiniteRow(InputType::kF32, keys, static_cast<uint64_t>(T) * heads, D);
    return bad >= 0 ? bad : firstNonFiniteRow(InputType::kF32, values, static_cast<uint64_t>(T) * heads, D);
  };
  bool everyStreamProjects = true;
  for (uint32_t h = 0; h < heads; ++h) everyStreamProjects = everyStreamProjects && seq->stream(layer, heads, h).basis;
  if (!everyStreamProjects) {
    const int64_t bad = firstBadInputRow();
    if (bad >= 0) return nonFiniteInput(bad, heads);
  }

  const uint64_t inStride = static_cast<uint64_t>(heads) * D;
  struct HeadPlan {
    std::vector<float> coefKeys, coefValues;           // rows to write, [n][r]
    std::vector<int32_t> rowPositions;                  // when the rows are the held ones + new
    std::vector<float> heldKeys, heldValues;            // calibration: held + new rows, [n][D]
    std::shared_ptr<LowRankBasis> fitted;               // bases fitted by this append
    bool hold = false;                                  // the rows join the held ones
  };
  std::vector<HeadPlan> plans(heads);
  std::vector<StreamWrite> writes;
  writes.reserve(heads);
  for (uint32_t h = 0; h < heads; ++h) {
    Stream& s = seq->stream(layer, heads, h);
    HeadPlan& hp = plans[h];
    if (s.basis) {
      hp.coefKeys.resize(static_cast<size_t>(T) * r);
      hp.coefValues.resize(static_cast<size_t>(T) * rv);
      lr.project(keys + static_cast<uint64_t>(h) * D, inStride, T, D, s.basis->keys.data(), r, 1.0f, hp.coefKeys.data(), r);
      projectValueRows(values + static_cast<uint64_t>(h) * D, inStride, T, *s.basis, hp.coefValues.data());
      StreamWrite w;
      w.stream = &s;
      w.rows = T;
      w.keys = hp.coefKeys.data();
      w.values = hp.coefValues.data();
      w.positions = positions;
      writes.push_back(std::move(w));
      continue;
    }
    const uint64_t held = static_cast<uint64_t>(s.pendingRows());
    if (config_.calibrationRows == 0 || held + T < config_.calibrationRows) {
      hp.hold = true;
      continue;
    }
    // The calibration point: fit on the first calibrationRows rows, project them all.
    const uint64_t n = held + T;
    hp.heldKeys.resize(n * D);
    hp.heldValues.resize(n * D);
    s.held.read(held, D, hp.heldKeys.data(), hp.heldValues.data());
    // Rows below calibrationRows as HeldRows::append would have held them (binary16, unless
    // a row beyond its range made the rows f32), the rest as given.
    bool wide = s.held.wide() || heldF32();
    for (uint32_t t = 0; t < T; ++t) {
      float* k = hp.heldKeys.data() + (held + t) * D;
      float* v = hp.heldValues.data() + (held + t) * D;
      std::memcpy(k, keys + t * inStride + static_cast<uint64_t>(h) * D, 4ull * D);
      std::memcpy(v, values + t * inStride + static_cast<uint64_t>(h) * D, 4ull * D);
      if (held + t >= config_.calibrationRows) continue;
      if (!wide && !(HeldRows::fitsHalf(k, D) && HeldRows::fitsHalf(v, D))) wide = true;
      for (uint32_t d = 0; !wide && d < D; ++d) k[d] = halfToFloat(floatToHalf(k[d])), v[d] = halfToFloat(floatToHalf(v[d]));
    }
    hp.rowPositions = s.pendingPositions;
    hp.rowPositions.insert(hp.rowPositions.end(), positions, positions + T);
    hp.fitted = std::make_shared<LowRankBasis>();
    KVC_RETURN_IF_ERROR(fitStreamBases(hp.heldKeys.data(), hp.heldValues.data(), config_.calibrationRows, hp.fitted.get()));
    hp.coefKeys.resize(n * r);
    hp.coefValues.resize(n * rv);
    lr.project(hp.heldKeys.data(), D, static_cast<uint32_t>(n), D, hp.fitted->keys.data(), r, 1.0f, hp.coefKeys.data(), r);
    projectValueRows(hp.heldValues.data(), D, static_cast<uint32_t>(n), *hp.fitted, hp.coefValues.data());
    StreamWrite w;
    w.stream = &s;
    w.replace = true;
    w.rows = static_cast<uint32_t>(n);
    w.keys = hp.coefKeys.data();
    w.values = hp.coefValues.data();
    w.positions = hp.rowPositions.data();
    writes.push_back(std::move(w));
  }
  if (const Status written = writeStreams(writes); !written.isOk()) {
    const int64_t bad = everyStreamProjects ? firstBadInputRow() : -1;
    return bad >= 0 ? nonFiniteInput(bad, heads) : written;
  }

  // Commit: nothing below can fail.
  for (uint32_t h = 0; h < heads; ++h) {
    Stream& s = seq->stream(layer, heads, h);
    HeadPlan& hp = plans[h];
    if (hp.hold) {
      if (heldF32()) s.held.widen(D);
      for (uint32_t t = 0; t < T; ++t) {
        s.held.append(keys + t * inStride + static_cast<uint64_t>(h) * D, values + t * inStride + static_cast<uint64_t>(h) * D, D);
      }
      s.pendingPositions.insert(s.pendingPositions.end(), positions, positions + T);
    } else if (hp.fitted) {
      s.basis = hp.fitted;
      s.held.clear();
      s.pendingPositions.clear();
      projectLog(s.queries, nullptr, *s.basis);
    }
    if (!s.scores.empty()) s.scores.resize(s.rows(), 0.0f);
  }
  seq->nextPosition[layer] = positions[T - 1] + 1;
  return Status::ok();
}

Status Cache::attentionChunkLowRank(const uint64_t* ids, uint32_t count, const AttentionRequest& r, uint32_t t0, uint32_t t1) {
  if (config_.hostLowRank(backend_->attendsValueDim(), backend_->attendsLiftedKeys())) {
    return attentionChunkLowRankHost(ids, count, r, t0, t1);
  }
  // With rope the backend lifts key rows (AttentionParams::liftDim): queries go unprojected,
  // and calibrating streams (rows held on the host) attend on the host.
  const bool lifted = config_.ropeDims != 0;
  if (lifted) KVC_RETURN_IF_ERROR(attentionChunkLowRankHost(ids, count, r, t0, t1, /*calibratingOnly=*/true));
  const LowRankKernels& lr = *lowRank_;
  const uint32_t heads = config_.kvHeads, D = config_.headDim, R = config_.storedDim(), g = config_.queriesPerHead();
  // Value rows are RV wide (RV != R only on a backend that attends such rows); projected
  // (or, lifted, full) queries and value outputs share one token stride of g * W floats.
  const uint32_t RV = config_.valueStoredDim(), W = std::max(lifted ? D : R, RV);
  const uint32_t tq = t1 - t0;
  const bool whole = t0 == 0 && t1 == r.tq;
  const uint64_t tokenStride = static_cast<uint64_t>(config_.queryHeads) * D;
  const uint64_t seqStride = tokenStride * r.tq;
  const size_t perStream = static_cast<size_t>(tq) * g * W;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  lowRankQueryScratch_.resize(static_cast<size_t>(count) * heads * perStream);
  lowRankOutScratch_.resize(static_cast<size_t>(count) * heads * perStream);
  queryPositionScratch_.resize(static_cast<size_t>(count) * heads * tq);
  attentionScratch_.clear();
  attentionScratch_.reserve(static_cast<size_t>(count) * heads);
  struct Lift {
    const LowRankBasis* basis;
    const float* coef;
    float* out;
  };
  std::vector<Lift> lifts;
  std::vector<float> heldKeys, heldValues;  // a calibrating stream's rows as f32
  for (uint32_t i = 0; i < count; ++i) {
    Sequence* seq = sequences_.at(ids[i]).get();
    for (uint32_t h = 0; h < heads; ++h) {
      Stream& s = seq->stream(r.layer, heads, h);
      const size_t k = static_cast<size_t>(i) * heads + h;
      const float* q = r.queries + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      float* out = r.out + i * seqStride + t0 * tokenStride + static_cast<uint64_t>(h) * g * D;
      float* lse = r.lse ? r.lse + (static_cast<uint64_t>(i) * r.tq + t0) * config_.queryHeads + static_cast<uint64_t>(h) * g : nullptr;
      float* scores = nullptr;
      if (r.accumulateScores) {
        if (s.scores.size() != static_cast<size_t>(s.rows())) s.scores.resize(s.rows(), 0.0f);
        scores = s.scores.data();
      }
      int32_t* cutoff = queryPositionScratch_.data() + k * tq;
      const uint32_t first = static_cast<uint32_t>(s.rows()) - r.tq + t0;  // row of query token t0
      if (!s.basis && lifted) continue;  // attended on the host above
      if (!s.basis) {
        for (uint32_t t = 0; t < tq; ++t) cutoff[t] = s.pendingPositions[first + t];
        DenseAttentionArgs a;
        a.rows = static_cast<uint32_t>(s.pendingRows());
        heldKeys.resize(static_cast<size_t>(a.rows) * D);
        heldValues.resize(static_cast<size_t>(a.rows) * D);
        s.held.read(a.rows, D, heldKeys.data(), heldValues.data());
        a.headDim = D;
        a.queriesPerHead = g;
        a.tq = tq;
        a.keys = heldKeys.data();
        a.values = heldValues.data();
        a.positions = s.pendingPositions.data();
        a.cutoff = cutoff;
        a.queries = q;
        a.out = out;
        a.tokenStride = tokenStride;
        a.lse = lse;
        a.lseTokenStride = config_.queryHeads;
        a.scores = scores;
        a.scale = scale;
        lr.denseAttention(a);
        continue;
      }
      float* qp = lowRankQueryScratch_.data() + k * perStream;
      float* op = lowRankOutScratch_.data() + k * perStream;
      for (uint32_t t = 0; t < tq; ++t) {
        if (lifted) {
          for (uint32_t j = 0; j < g; ++j) {
            std::memcpy(qp + static_cast<size_t>(t) * g * W + static_cast<size_t>(j) * D, q + t * tokenStride + static_cast<uint64_t>(j) * D, 4ull * D);
          }
        } else {
          lr.project(q + t * tokenStride, D, g, D, s.basis->keys.data(), R, 1.0f, qp + static_cast<size_t>(t) * g * W, R);
        }
      }
      AttentionStream a;
      a.kv.blockTable = s.blocks.data();
      a.kv.length = s.length;
      a.queries = qp;
      a.out = op;
      a.lse = lse;
      a.scores = scores;
      if (lifted) a.keyBasis = s.basis->keys.data();
      a.firstQueryRow = s.length - static_cast<int32_t>(r.tq) + static_cast<int32_t>(t0);
      // RoPE by stored position rotates each query at its own position: the backend needs it.
      if (!whole || (lifted && !r.rankPositions)) {
        KVC_RETURN_IF_ERROR(readPositions(s, first, tq, cutoff));
        a.queryPositions = cutoff;
      }
      attentionScratch_.push_back(a);
      for (uint32_t t = 0; t < tq; ++t) {
        lifts.push_back(Lift{s.basis.get(), op + static_cast<size_t>(t) * g * W, out + t * tokenStride});
      }
    }
  }
  if (attentionScratch_.empty()) return Status::ok();
  AttentionParams p;
  p.pool = pool();
  p.codec = codec();
  p.streamCount = static_cast<uint32_t>(attentionScratch_.size());
  p.streams = attentionScratch_.data();
  p.queriesPerHead = g;
  p.tq = tq;
  p.tokenStride = static_cast<uint64_t>(g) * W;
  p.lseTokenStride = config_.queryHeads;
  p.scale = scale;  // logits of the original space: q . (B c) / sqrt(D) = (B^T q) . c / sqrt(D)
  if (lifted) {
    p.liftDim = D;
    p.rope.spec = config_.rope();
    p.rope.spec.byRank = r.rankPositions;
  }
  KVC_RETURN_IF_ERROR(backend_->attention(p));
  for (const Lift& l : lifts) {
    if (config_.fullValues()) {
      std::memcpy(l.out, l.coef, 4ull * g * D);  // values stored unprojected: outputs are final
    } else {
      lr.lift(l.coef, RV, g, RV, l.basis->values.data(), D, l.out, D);
    }
  }
  return Status::ok();
}

void Cache::recordQueriesLowRank(Stream& stream, uint32_t streamIndex, const float* queries, uint32_t tq, uint64_t tokenStride,
                                 const int32_t* positions) {
  const uint32_t D = config_.headDim, R = config_.storedDim(), g = config_.queriesPerHead();
  // With rope the logit q . R_p B c has no r-dimensional form (lowrank_host.cpp), so the
  // log keeps whole pre-RoPE queries: compaction rotates them by position.
  if (!stream.basis || config_.ropeDims != 0) {
    recordQueries(stream, streamIndex, queries, tq, tokenStride, D, positions);
    return;
  }
  std::vector<float> projected(static_cast<size_t>(tq) * g * R);
  const float scale = std::sqrt(static_cast<float>(R) / static_cast<float>(D));
  for (uint32_t t = 0; t < tq; ++t) {
    lowRank_->project(queries + t * tokenStride, D, g, D, stream.basis->keys.data(), R, scale,
                                 projected.data() + static_cast<size_t>(t) * g * R, R);
  }
  recordQueries(stream, streamIndex, projected.data(), tq, static_cast<uint64_t>(g) * R, R, nullptr);
}

// Re-expresses a stream's query log on new bases: vectors logged in the original space
// (from == nullptr) or on `from` (lifted back first) are projected onto `to`, scaled.
void Cache::projectLog(QueryLog& log, const LowRankBasis* from, const LowRankBasis& to) const {
  if (config_.ropeDims != 0) return;  // logged whole (recordQueriesLowRank)
  const LowRankKernels& lr = *lowRank_;
  const uint32_t D = config_.headDim, R = config_.storedDim();
  const float scale = std::sqrt(static_cast<float>(R) / static_cast<float>(D));
  auto convert = [&](std::vector<float>& v) {
    const uint32_t inDim = from ? R : D;
    const uint32_t n = static_cast<uint32_t>(v.size() / inDim);
    if (n == 0) return;
    std::vector<float> full;
    const float* src = v.data();
    if (from) {
      std::vector<float> unscaled(v.size());
      for (size_t i = 0; i < v.size(); ++i) unscaled[i] = v[i] / scale;
      full.resize(static_cast<size_t>(n) * D);
      lr.lift(unscaled.data(), R, n, R, from->keys.data(), D, full.data(), D);
      src = full.data();
    }
    std::vector<float> out(static_cast<size_t>(n) * R);
    lr.project(src, D, n, D, to.keys.data(), R, scale, out.data(), R);
    v = std::move(out);
  };
  convert(log.reservoir);
  convert(log.recent);
}

Status Cache::readLowRank(const Stream& s, RowsOut* out) {
  const uint32_t D = config_.headDim, R = config_.storedDim();
  const size_t n = static_cast<size_t>(s.rows());
  out->keys.resize(n * D);
  out->values.resize(n * D);
  out->beta.assign(n, 0.0f);
  out->positions.resize(n);
  if (!s.basis) {
    s.held.read(n, D, out->keys.data(), out->values.data());
    std::copy(s.pendingPositions.begin(), s.pendingPositions.end(), out->positions.begin());
    return Status::ok();
  }
  if (n == 0) return Status::ok();
  std::vector<float> ck(n * R), cv(n * config_.valueStoredDim());
  StreamView view{s.blocks.data(), s.length};
  KVC_RETURN_IF_ERROR(backend_->readRows(pool(), codec(), view, 0, static_cast<uint32_t>(n), ck.data(), cv.data(),
                                         out->beta.data(), out->positions.data()));
  const LowRankKernels& lr = *lowRank_;
  lr.lift(ck.data(), R, static_cast<uint32_t>(n), R, s.basis->keys.data(), D, out->keys.data(), D);
  liftValueRows(cv.data(), static_cast<uint32_t>(n), *s.basis, out->values.data());
  return Status::ok();
}

// Gives the listed streams new bases (given, or fitted on each stream's rows when bases[i]
// is null) and re-projects their rows: read (lifted to headDim), project, write into fresh
// blocks with their beta and positions; all or nothing.
Status Cache::rebase(Sequence* seq, const std::vector<uint32_t>& streams,
                     const std::vector<std::shared_ptr<const LowRankBasis>>& given, bool) {
  const LowRankKernels& lr = *lowRank_;
  const uint32_t D = config_.headDim, R = config_.storedDim();
  struct Plan {
    RowsOut rows;
    std::vector<float> coefKeys, coefValues;
    std::shared_ptr<const LowRankBasis> basis;
  };
  std::vector<Plan> plans(streams.size());
  std::vector<StreamWrite> writes;
  for (size_t i = 0; i < streams.size(); ++i) {
    Stream& s = seq->streams[streams[i]];
    Plan& p = plans[i];
    KVC_RETURN_IF_ERROR(readLowRank(s, &p.rows));
    const uint32_t n = static_cast<uint32_t>(s.rows());
    if (given[i]) {
      p.basis = given[i];
    } else {
      if (n == 0) continue;  // nothing to fit on: the stream stays as it is
      auto fitted = std::make_shared<LowRankBasis>();
      KVC_RETURN_IF_ERROR(fitStreamBases(p.rows.keys.data(), p.rows.values.data(), n, fitted.get()));
      p.basis = fitted;
    }
    p.coefKeys.resize(static_cast<size_t>(n) * R);
    p.coefValues.resize(static_cast<size_t>(n) * config_.valueStoredDim());
    if (n > 0) {
      lr.project(p.rows.keys.data(), D, n, D, p.basis->keys.data(), R, 1.0f, p.coefKeys.data(), R);
      projectValueRows(p.rows.values.data(), D, n, *p.basis, p.coefValues.data());
    }
    StreamWrite w;
    w.stream = &s;
    w.replace = true;
    w.rows = n;
    w.keys = p.coefKeys.data();
    w.values = p.coefValues.data();
    w.positions = p.rows.positions.data();
    w.beta = p.rows.beta.data();
    writes.push_back(std::move(w));
  }
  KVC_RETURN_IF_ERROR(writeStreams(writes));
  for (size_t i = 0; i < streams.size(); ++i) {
    Plan& p = plans[i];
    if (!p.basis) continue;
    Stream& s = seq->streams[streams[i]];
    projectLog(s.queries, s.basis.get(), *p.basis);
    s.basis = p.basis;
    s.held.clear();
    s.pendingPositions.clear();
  }
  return Status::ok();
}

Status Cache::finishCalibration(uint64_t id) {
  if (!config_.lowRank()) return Status::ok();
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  if (seq->busy) return busy("the sequence is being compacted");
  std::vector<uint32_t> streams;
  for (uint32_t i = 0; i < seq->streams.size(); ++i) {
    if (!seq->streams[i].basis && seq->streams[i].pendingRows() > 0) streams.push_back(i);
  }
  if (streams.empty()) return Status::ok();
  return rebase(seq, streams, std::vector<std::shared_ptr<const LowRankBasis>>(streams.size()), true);
}

Status Cache::fitBases(uint64_t id) {
  if (!config_.lowRank()) return invalidArgument("fitBases needs a cache created with lowRank");
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  if (seq->busy) return busy("the sequence is being compacted");
  std::vector<uint32_t> streams;
  for (uint32_t i = 0; i < seq->streams.size(); ++i) {
    if (seq->streams[i].rows() > 0) streams.push_back(i);
  }
  return rebase(seq, streams, std::vector<std::shared_ptr<const LowRankBasis>>(streams.size()), true);
}

Status Cache::setBases(uint64_t id, uint32_t layer, uint32_t head, const float* keys, const float* values) {
  if (!config_.lowRank()) return invalidArgument("setBases needs a cache created with lowRank");
  Sequence* seq;
  KVC_RETURN_IF_ERROR(find(id, &seq));
  KVC_RETURN_IF_ERROR(checkLayer(layer));
  if (head >= config_.kvHeads) return invalidArgument("kvHead " + std::to_string(head) + " is out of range");
  if (seq->busy) return busy("the sequence is being compacted");
  const uint32_t D = config_.headDim, R = config_.storedDim(), RV = config_.fullValues() ? 0 : config_.valueStoredDim();
  const uint64_t n = static_cast<uint64_t>(D) * R, nv = static_cast<uint64_t>(D) * RV;
  if (!allFiniteF32(keys, n) || !allFiniteF32(values, nv)) return invalidArgument("bases must be finite");
  // Orthonormal to f32 rounding: attention and the lift assume B^T B = I.
  const double ek = orthonormalityError(keys, D, R), ev = orthonormalityError(values, D, RV);
  if (ek > 1e-4 || ev > 1e-4) {
    return invalidArgument("bases must have orthonormal columns (largest |B^T B - I| entry: keys " + std::to_string(ek) +
                           ", values " + std::to_string(ev) + ")");
  }
  auto basis = std::make_shared<LowRankBasis>();
  basis->keys.assign(keys, keys + n);
  basis->values.assign(values, values + nv);
  return rebase(seq, {layer * config_.kvHeads + head}, {basis}, false);
}

Status Cache::queryLog(uint64_t id, uint32_t layer, uint32_t head, QueryLog* out) const {
  const Sequence* seq;
  KVC_RETURN_IF_ERROR(findConst(id, &seq));
  KVC_RETURN_IF_ERROR(checkLayer(layer));
  if (head >= config_.kvHeads) return invalidArgument("kvHead " + std::to_string(head) + " is out of range");
  const Stream& s = seq->stream(layer, config_.kvHeads, head);
  *out = s.queries;
  if (!config_.lowRank() || !s.basis || config_.ropeDims != 0) return Status::ok();
  const uint32_t D = config_.headDim, R = config_.storedDim();
  const float scale = std::sqrt(static_cast<float>(R) / static_cast<float>(D));
  auto lift = [&](std::vector<float>& v) {
    const uint32_t n = static_cast<uint32_t>(v.size() / R);
    std::vector<float> unscaled(v.size());
    for (size_t i = 0; i < v.size(); ++i) unscaled[i] = v[i] / scale;
    v.assign(static_cast<size_t>(n) * D, 0.0f);
    if (n) lowRank_->lift(unscaled.data(), R, n, R, s.basis->keys.data(), D, v.data(), D);
  };
  lift(out->reservoir);
  lift(out->recent);
  return Status::ok();
}

Status Cache::bases(uint64_t id, uint32_t layer, uint32_t head, std::vector<float>* keys, std::vector<float>* values,
                    bool* has) const {
  const Sequence* seq;
  KVC_RETURN_IF_ERROR(findConst(id, &seq));
  KVC_RETURN_IF_ERROR(checkLayer(layer));
  if (head >= config_.kvHeads) return invalidArgument("kvHead " + std::to_string(head) + " is out of range");
  const Stream& s = seq->stream(layer, config_.kvHeads, head);
  *has = static_cast<bool>(s.basis);
  if (s.basis) {
    *keys = s.basis->keys;
    *values = s.basis->values;
  }
  return Status::ok();
}

}  // namespace kvc
