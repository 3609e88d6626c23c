// Transactions under backend faults (cpp/core/cache.h, "Transactions"): every mutating cache
// operation either completes or leaves the cache exactly as it was. For each operation the
// test counts the backend calls N it makes, then for every k = 1..N builds the same cache
// over FaultyBackend (cpp/testing), fails the k-th call (before it runs, and after it ran:
// a device that wrote part of its output and then failed), and checks that
//   - the operation returns the injected status;
//   - every live sequence exports the same bytes, keeps the same block tables, and stats()
//     (sequences, rows, blocksUsed, blocksFree) is unchanged;
//   - the same operation then succeeds on that cache and gives the bytes and stats of an
//     unfailed run; freeing every sequence returns every block (no leak, no double release).
// Backends: the CPU backend, and the emulated CUDA backend when it was built.
// Exit status 0 when every check passed; last line "kvc_transactions_tests: N checks, F failures".
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/cache.h"
#include "core/compaction/sequence_compactor.h"
#include "core/eviction/evict.h"
#include "testing/faulty_backend.h"
#ifdef KVC_TEST_CUDA_EMULATION
#include "cuda/emulated_backend.h"
#endif

using namespace kvc;
using kvc::testing::FaultTiming;
using kvc::testing::FaultyBackend;

namespace {

int checks = 0, failures = 0;

#define CHECK(cond, ...)                                          \
  do {                                                            \
    ++checks;                                                     \
    if (!(cond)) {                                                \
      ++failures;                                                 \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                   \
      std::printf("\n");                                          \
    }                                                             \
  } while (0)

// Deterministic inputs (splitmix64), uniform in [-2, 2).
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t bits() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float next() { return static_cast<float>(static_cast<double>(bits() >> 11) / 9007199254740992.0 * 4.0 - 2.0); }
  std::vector<float> floats(size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = next();
    return v;
  }
};

using BackendMaker = std::unique_ptr<Backend> (*)();
std::unique_ptr<Backend> makeCpu() {
  BackendOptions o;
  o.threads = 1;
  return createCpuBackend(o);
}
#ifdef KVC_TEST_CUDA_EMULATION
std::unique_ptr<Backend> makeEmulatedCuda() { return createEmulatedCudaBackend(BackendOptions()); }
#endif

// One cache over a FaultyBackend and the state a scenario builds on it.
struct World {
  std::unique_ptr<Cache> cache;
  FaultyBackend* faulty = nullptr;
  Rng rng{0x7478};
  std::vector<uint64_t> ids;           // sequences the scenario created (some may be freed)
  std::vector<uint8_t> exported;       // bytes an import scenario imports
  std::vector<uint64_t> created;       // sequences the operation created

  const CacheConfig& config() const { return cache->config(); }
  void append(uint64_t id, uint32_t layer, uint32_t tokens) {
    const size_t n = static_cast<size_t>(tokens) * config().kvHeads * config().headDim;
    const std::vector<float> k = rng.floats(n), v = rng.floats(n);
    AppendInput in;
    in.tokens = tokens;
    in.keys = k.data();
    in.values = v.data();
    const Status st = cache->append(id, layer, in);
    CHECK(st.isOk(), "setup append: %s", st.message().c_str());
  }
  uint64_t sequence(uint32_t rowsPerLayer) {
    const uint64_t id = cache->createSequence();
    ids.push_back(id);
    for (uint32_t l = 0; l < config().layers; ++l) append(id, l, rowsPerLayer + 3 * l);
    return id;
  }
  uint64_t fork(uint64_t parent) {
    uint64_t child = 0;
    const Status st = cache->fork(parent, &child);
    CHECK(st.isOk(), "setup fork: %s", st.message().c_str());
    ids.push_back(child);
    return child;
  }
  uint64_t blockBytes() const { return blockFootprint(config().blockLayout()); }
};

// Everything the operation must leave as it was.
struct Snapshot {
  std::map<uint64_t, std::vector<uint8_t>> exports;
  std::map<uint64_t, std::vector<std::vector<int32_t>>> tables;
  uint64_t sequences = 0, rows = 0, blocksUsed = 0, blocksFree = 0;
  std::string error;  // empty when the snapshot could be taken
};

Snapshot snapshot(World& w) {
  Snapshot s;
  std::set<uint64_t> live(w.ids.begin(), w.ids.end());
  live.insert(w.created.begin(), w.created.end());
  std::set<int32_t> distinct;
  for (uint64_t id : live) {
    const Sequence* seq = w.cache->sequence(id);
    if (!seq) continue;
    const Status st = w.cache->exportSequence(id, &s.exports[id]);
    if (!st.isOk()) s.error = "export " + std::to_string(id) + ": " + st.message();
    for (const Stream& stream : seq->streams) {
      s.tables[id].push_back(stream.blocks);
      distinct.insert(stream.blocks.begin(), stream.blocks.end());
    }
  }
  const CacheStats st = w.cache->stats();
  s.sequences = st.sequences;
  s.rows = st.rows;
  s.blocksUsed = st.blocksUsed;
  s.blocksFree = st.blocksFree;
  // Every used block belongs to some live stream (a leaked block would not).
  if (distinct.size() != st.blocksUsed) {
    s.error = "blocksUsed " + std::to_string(st.blocksUsed) + " but live streams hold " + std::to_string(distinct.size());
  }
  return s;
}

std::string differences(const Snapshot& a, const Snapshot& b, bool withTables) {
  std::string d;
  if (a.sequences != b.sequences) d += " sequences " + std::to_string(a.sequences) + "->" + std::to_string(b.sequences);
  if (a.rows != b.rows) d += " rows " + std::to_string(a.rows) + "->" + std::to_string(b.rows);
  if (a.blocksUsed != b.blocksUsed) d += " blocksUsed " + std::to_string(a.blocksUsed) + "->" + std::to_string(b.blocksUsed);
  if (a.blocksFree != b.blocksFree) d += " blocksFree " + std::to_string(a.blocksFree) + "->" + std::to_string(b.blocksFree);
  if (a.exports.size() != b.exports.size()) d += " live sequences differ";
  for (const auto& [id, bytes] : a.exports) {
    auto it = b.exports.find(id);
    if (it == b.exports.end() || it->second != bytes) d += " export of sequence " + std::to_string(id) + " differs";
  }
  if (withTables && a.tables != b.tables) d += " block tables differ";
  if (!b.error.empty()) d += " " + b.error;
  return d;
}

struct Scenario {
  std::string name;
  CacheConfig config;
  std::function<void(World&)> setup;
  std::function<Status(World&)> op;
};

bool build(const Scenario& s, BackendMaker make, World* w) {
  auto faulty = std::make_unique<FaultyBackend>(make());
  w->faulty = faulty.get();
  const Status st = Cache::create(s.config, std::move(faulty), &w->cache);
  CHECK(st.isOk(), "%s: Cache::create: %s", s.name.c_str(), st.message().c_str());
  if (!st.isOk()) return false;
  s.setup(*w);
  return true;
}

// Frees every sequence; the pool must then be empty.
void checkNoLeak(World& w, const std::string& where) {
  for (uint64_t id : w.ids) w.cache->freeSequence(id);
  for (uint64_t id : w.created) w.cache->freeSequence(id);
  const CacheStats st = w.cache->stats();
  CHECK(st.sequences == 0 && st.blocksUsed == 0 && st.blocksFree * w.blockBytes() == st.maxBytes,
        "%s: after freeing every sequence: %llu sequences, %llu blocks used, %llu free", where.c_str(),
        (unsigned long long)st.sequences, (unsigned long long)st.blocksUsed, (unsigned long long)st.blocksFree);
}

uint64_t faultPoints = 0;

// Runs one scenario on one backend; returns the backend calls of the unfailed operation.
uint64_t runScenario(const Scenario& s, BackendMaker make, const char* backendName) {
  const std::string name = std::string(backendName) + " / " + s.name;
  World ref;
  if (!build(s, make, &ref)) return 0;
  ref.faulty->arm(0);
  const Status ok = s.op(ref);
  const uint64_t calls = ref.faulty->calls();
  CHECK(ok.isOk(), "%s: unfailed run: %s", name.c_str(), ok.message().c_str());
  const Snapshot expected = snapshot(ref);
  CHECK(expected.error.empty(), "%s: %s", name.c_str(), expected.error.c_str());
  CHECK(calls > 0, "%s: the operation made no backend call", name.c_str());

  const StatusCode codes[] = {StatusCode::kCudaError, StatusCode::kOutOfMemory, StatusCode::kInternal};
  for (FaultTiming timing : {FaultTiming::kBefore, FaultTiming::kAfter}) {
    for (uint64_t k = 1; k <= calls; ++k) {
      const std::string where = name + " [call " + std::to_string(k) + "/" + std::to_string(calls) +
                                (timing == FaultTiming::kBefore ? ", fails before" : ", fails after") + "]";
      World w;
      if (!build(s, make, &w)) return calls;
      const Snapshot before = snapshot(w);
      const StatusCode code = codes[k % 3];
      w.faulty->arm(k, code, timing);
      const Status failed = s.op(w);
      const bool fired = w.faulty->fired();
      const char* call = kvc::testing::backendCallName(w.faulty->firedCall());
      w.faulty->disarm();
      ++faultPoints;
      CHECK(fired, "%s: the fault did not fire (%llu calls this time)", where.c_str(), (unsigned long long)w.faulty->calls());
      CHECK(failed.code() == code && failed.message().find("injected fault") != std::string::npos,
            "%s (%s): returned %s '%s', want %s", where.c_str(), call, statusCodeName(failed.code()),
            failed.message().c_str(), statusCodeName(code));
      const Snapshot after = snapshot(w);
      const std::string diff = differences(before, after, true);
      CHECK(diff.empty(), "%s (%s): the cache changed:%s", where.c_str(), call, diff.c_str());
      // The same operation now succeeds and ends where an unfailed run ends.
      w.created.clear();
      const Status retry = s.op(w);
      CHECK(retry.isOk(), "%s (%s): retry failed: %s", where.c_str(), call, retry.message().c_str());
      const Snapshot done = snapshot(w);
      // Sequence ids are assigned in creation order, so they match the unfailed run's.
      const std::string diff2 = differences(expected, done, false);
      CHECK(diff2.empty(), "%s (%s): the retry differs from an unfailed run:%s", where.c_str(), call, diff2.c_str());
      checkNoLeak(w, where);
    }
  }
  checkNoLeak(ref, name + " [unfailed]");
  return calls;
}

CacheConfig smallConfig(Storage keys, Storage values, bool rotate) {
  CacheConfig c;
  c.layers = 2;
  c.kvHeads = 2;
  c.headDim = 16;
  c.queryHeads = 4;
  c.blockSize = 8;
  c.keys = keys;
  c.values = values;
  c.groupSize = 16;
  c.rotateKeys = c.rotateValues = rotate;
  c.threads = 1;
  c.maxBytes = 256ull * c.blockLayout().blockBytes;  // the emulated device allocates the whole pool
  return c;
}

// Precision tiers: the newest 8 rows in f16, older ones in int4 (16 rows per block).
CacheConfig tieredConfig() {
  CacheConfig c = smallConfig(Storage::kF16, Storage::kF16, false);
  c.tiers = {TierSpec{8, Storage::kF16, Storage::kF16}, TierSpec{0, Storage::kInt4, Storage::kInt4}};
  return c;
}

// Low-rank storage (f16 coefficients, bases fitted on the first 8 rows). With rope, keys
// before RoPE: compaction fits on a rope stage (core/compaction/rope_stage.h) whose lifted
// keys are wider than the stored coefficient rows. Without, keys 16 wide and values 8: value
// rows narrower than a 16-float vector (the CPU must pick kernels that fit both widths).
CacheConfig lowRankConfig(uint32_t keys, uint32_t values, bool rope) {
  CacheConfig c = smallConfig(Storage::kF16, Storage::kF16, false);
  c.lowRankKeys = keys;
  c.lowRankValues = values;
  c.groupSize = 8;
  c.calibrationRows = 8;
  if (rope) {
    c.ropeDims = 16;
    c.ropeTheta = 10000.0;
  }
  c.maxBytes = 256ull * c.blockLayout().blockBytes;
  return c;
}

// A pool of exactly `blocks` blocks.
CacheConfig withBlocks(CacheConfig c, uint64_t blocks) {
  c.maxBytes = blocks * c.blockLayout().blockBytes;
  return c;
}

Status appendOp(World& w, uint64_t id, uint32_t layer, uint32_t tokens) {
  const size_t n = static_cast<size_t>(tokens) * w.config().kvHeads * w.config().headDim;
  Rng rng(0xA99E + tokens);  // the same rows on every run of the operation
  const std::vector<float> k = rng.floats(n), v = rng.floats(n);
  AppendInput in;
  in.tokens = tokens;
  in.keys = k.data();
  in.values = v.data();
  return w.cache->append(id, layer, in);
}

// Keep sets that exercise every keepRows path: whole old blocks (reused under kMove),
// scattered rows, an identity prefix, and a stream that keeps nothing.
Status keepOp(World& w, uint64_t id) {
  static const std::vector<int32_t> wholeBlocks = {8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 30};
  static const std::vector<int32_t> scattered = {0, 1, 5, 9, 10, 11, 17, 26, 31, 33};
  static const std::vector<int32_t> prefix = {0, 1, 2, 3, 4, 5, 7, 30};
  const std::vector<int32_t>* rows[] = {&wholeBlocks, &scattered, &prefix, nullptr};
  std::vector<KeepSet> sets;
  for (uint32_t i = 0; i < 4; ++i) {
    KeepSet k;
    k.layer = i / 2;
    k.head = i % 2;
    k.rows = rows[i] ? rows[i]->data() : nullptr;
    k.count = rows[i] ? static_cast<uint32_t>(rows[i]->size()) : 0;
    sets.push_back(k);
  }
  return w.cache->keepRows(id, sets.data(), static_cast<uint32_t>(sets.size()));
}

Status evictOp(World& w, uint64_t id, ScoreSource source, double ratio, bool rankPositions = false) {
  PolicySpec p;
  p.source = source;
  p.sinks = 2;
  p.recent = 4;
  p.window = 2;
  p.pool = 3;
  p.rankPositions = rankPositions;
  BudgetSpec b;
  b.kind = BudgetSpec::Kind::kRatio;
  b.ratio = ratio;
  EvictionReport report;
  return evictSequence(*w.cache, id, p, b, &report);
}

Status compactOp(World& w, uint64_t id, double ratio) {
  compaction::SequenceRequest r;
  r.ratio = ratio;
  r.sinks = 1;
  r.recent = 2;
  r.querySource = compaction::QuerySource::kKeys;
  r.threads = 1;
  compaction::SequencePlan plan;
  KVC_RETURN_IF_ERROR(compaction::planCompaction(*w.cache, id, r, &plan));
  KVC_RETURN_IF_ERROR(compaction::computeCompaction(*w.cache, r, &plan, nullptr));
  return compaction::applyCompaction(*w.cache, &plan);
}

std::vector<Scenario> scenarios(const CacheConfig& base, const std::string& tag) {
  std::vector<Scenario> v;
  auto add = [&](const std::string& name, CacheConfig c, std::function<void(World&)> setup, std::function<Status(World&)> op) {
    v.push_back(Scenario{name + " (" + tag + ")", c, std::move(setup), std::move(op)});
  };
  add("append into new blocks", base, [](World& w) { w.sequence(13); w.sequence(5); },
      [](World& w) { return appendOp(w, w.ids[0], 0, 11); });
  add("fork + append: copy-on-write of the child's shared partial block", base,
      [](World& w) { w.fork(w.sequence(13)); }, [](World& w) { return appendOp(w, w.ids[1], 0, 5); });
  add("fork + append: copy-on-write of the parent's shared partial block", base,
      [](World& w) { w.fork(w.sequence(13)); }, [](World& w) { return appendOp(w, w.ids[0], 0, 12); });
  add("truncate", base, [](World& w) { w.sequence(30); w.fork(w.ids[0]); },
      [](World& w) { return w.cache->truncate(w.ids[1], 17); });
  add("keepRows into fresh blocks", base, [](World& w) { w.sequence(36); },
      [](World& w) { return keepOp(w, w.ids[0]); });
  add("keepRows of a fork (shared blocks)", base, [](World& w) { w.fork(w.sequence(36)); },
      [](World& w) { return keepOp(w, w.ids[1]); });
  // 2 layers x 2 heads: 36 + 39 rows per head = 5 + 5 blocks per head, 20 in all.
  add("keepRows on a full pool (rebuilt in place)", withBlocks(base, 20), [](World& w) { w.sequence(36); },
      [](World& w) { return keepOp(w, w.ids[0]); });
  add("evict (key norm policy)", base, [](World& w) { w.sequence(40); w.fork(w.ids[0]); },
      [](World& w) { return evictOp(w, w.ids[0], ScoreSource::kKeyNorm, 0.4); });
  // 41 + 44 rows per head = 6 + 6 blocks per head, 24 in all.
  add("evict (random policy) on a full pool", withBlocks(base, 24), [](World& w) { w.sequence(41); },
      [](World& w) { return evictOp(w, w.ids[0], ScoreSource::kRandom, 0.5); });
  if (base.ropeDims != 0) {
    // SnapKV / TOVA on keys before RoPE score a rotated stage of the streams (eviction/scores.cpp).
    const auto recorded = [](World& w) {
      const uint64_t id = w.sequence(40);
      const CacheConfig& c = w.config();
      const std::vector<float> q = w.rng.floats(static_cast<size_t>(2) * c.queryHeads * c.headDim);
      std::vector<float> out(q.size());
      for (uint32_t l = 0; l < c.layers; ++l) {
        AttentionRequest r;
        r.layer = l;
        r.tq = 2;
        r.queries = q.data();
        r.out = out.data();
        r.recordQueries = true;
        const Status st = w.cache->attention(&id, 1, r);
        CHECK(st.isOk(), "setup attention: %s", st.message().c_str());
      }
    };
    add("evict (snapKV, rope)", base, recorded, [](World& w) { return evictOp(w, w.ids[0], ScoreSource::kObservation, 0.5); });
    add("evict (tova, rope by rank)", base, recorded,
        [](World& w) { return evictOp(w, w.ids[0], ScoreSource::kLastQuery, 0.5, true); });
  }
  add("compaction plan + compute + apply", base, [](World& w) { w.sequence(40); },
      [](World& w) { return compactOp(w, w.ids[0], 0.5); });
  add("compaction of a fork", base, [](World& w) { w.fork(w.sequence(40)); },
      [](World& w) { return compactOp(w, w.ids[1], 0.3); });
  // 40 + 43 rows per head = 5 + 6 blocks per head, 22 in all.
  add("compaction on a full pool (rebuilt in place)", withBlocks(base, 22), [](World& w) { w.sequence(40); },
      [](World& w) { return compactOp(w, w.ids[0], 0.5); });
  // Background maintenance (replace_prefix.cpp): a compacted snapshot replaces the rows it was
  // taken of while the rows appended since are copied behind it into fresh blocks (tiered: the
  // 2 rows stay in f16, as aging needs 16 past the 8-row window; 37 rows = one aged block of 16
  // + 21).
  const auto swap = [](uint32_t rows0, uint32_t rows1) {
    return [rows0, rows1](World& w) {
      const uint64_t id = w.sequence(37);
      uint64_t snap = 0;
      const Status st = w.cache->snapshot(id, &snap);
      CHECK(st.isOk(), "setup snapshot: %s", st.message().c_str());
      w.ids.push_back(snap);
      const Status compacted = compactOp(w, snap, 0.5);
      CHECK(compacted.isOk(), "setup compaction: %s", compacted.message().c_str());
      w.append(id, 0, rows0);
      w.append(id, 1, rows1);
    };
  };
  const auto replace = [](World& w) { return w.cache->replacePrefix(w.ids[0], w.ids[1]); };
  add("replacePrefix after a compacted snapshot", base, swap(5, 11), replace);
  if (!base.tiers.empty()) add("replacePrefix of a tiered sequence after a compacted snapshot", base, swap(2, 2), replace);
  add("importSequence", base,
      [](World& w) {
        const uint64_t id = w.sequence(21);
        w.sequence(3);
        const Status st = w.cache->exportSequence(id, &w.exported);
        CHECK(st.isOk(), "setup export: %s", st.message().c_str());
      },
      [](World& w) {
        uint64_t id = 0;
        const Status st = w.cache->importSequence(w.exported.data(), w.exported.size(), &id);
        if (st.isOk()) w.created.push_back(id);
        return st;
      });
  return v;
}

// The two-phase API itself: abort (and a dropped transaction) leaves the cache as it was;
// rows rewritten between prepare and commit are what the stream holds after commit.
void testTwoPhase() {
  Scenario s{"two-phase", smallConfig(Storage::kF32, Storage::kF32, false), [](World& w) { w.fork(w.sequence(20)); }, nullptr};
  World w;
  if (!build(s, makeCpu, &w)) return;
  const Snapshot before = snapshot(w);
  const int32_t rows[] = {1, 4, 9, 16};
  KeepSet k;
  k.rows = rows;
  k.count = 4;
  for (int round = 0; round < 2; ++round) {
    KeepRowsTxn txn;
    Status st = w.cache->prepareKeepRows(w.ids[1], &k, 1, KeepRowsMode::kRewrite, &txn);
    CHECK(st.isOk() && txn.pending(), "prepare: %s", st.message().c_str());
    CHECK(w.cache->append(w.ids[1], 0, AppendInput()).code() == StatusCode::kBusy, "a pending transaction holds the sequence");
    if (round == 0) CHECK(txn.abort().isOk(), "abort");
  }
  CHECK(differences(before, snapshot(w), true).empty(), "abort and a dropped transaction leave the cache as it was");
  KeepRowsTxn txn;
  CHECK(w.cache->prepareKeepRows(w.ids[1], &k, 1, KeepRowsMode::kRewrite, &txn).isOk(), "prepare");
  const std::vector<float> values(16, 0.5f);
  const float beta = 0.25f;
  CHECK(w.cache->mutableBackend().rewriteRows(w.cache->pool(), w.cache->codec(), txn.stream(0), 2, 1, values.data(), &beta).isOk(),
        "rewrite");
  // While pending the sequence cannot be exported (busy); its lengths and the stats show
  // nothing of the transaction.
  int32_t lengths[2] = {0, 0};
  CHECK(w.cache->lengths(w.ids[1], 0, lengths).isOk() && lengths[0] == 20 && lengths[1] == 20, "lengths before commit");
  CHECK(w.cache->stats().rows == before.rows && w.cache->stats().blocksUsed == before.blocksUsed + 1,
        "before commit only the transaction's fresh block is in use");
  txn.commit();
  RowsOut parent, child;
  CHECK(w.cache->read(w.ids[0], 0, 0, &parent).isOk() && w.cache->read(w.ids[1], 0, 0, &child).isOk(), "read");
  CHECK(child.positions.size() == 4 && child.positions[2] == parent.positions[9] && child.values[2 * 16] == 0.5f &&
            child.beta[2] == 0.25f && child.keys[3 * 16] == parent.keys[16 * 16],
        "commit shows the gathered and rewritten rows");
  CHECK(parent.positions.size() == 20 && parent.values[9 * 16] != 0.5f, "the parent keeps its rows");
  const int32_t twice[] = {0};
  KeepSet dup[2] = {k, k};
  dup[1].rows = twice;
  dup[1].count = 1;
  CHECK(w.cache->keepRows(w.ids[0], dup, 2).code() == StatusCode::kInvalidArgument, "a stream named twice is rejected");
  checkNoLeak(w, "two-phase");
}

// The in-place path (a full pool) and the fresh-block path give the same rows.
void testInPlaceMatchesFresh(BackendMaker make, const char* backendName) {
  const CacheConfig roomy = smallConfig(Storage::kInt8, Storage::kInt4, true);
  struct Case {
    const char* name;
    uint32_t rows;
    std::function<Status(World&)> op;
  };
  const Case cases[] = {
      {"keepRows", 36, [](World& w) { return keepOp(w, w.ids[0]); }},
      {"evict", 41, [](World& w) { return evictOp(w, w.ids[0], ScoreSource::kRandom, 0.5); }},
      {"compaction", 40, [](World& w) { return compactOp(w, w.ids[0], 0.5); }},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> bytes[2];
    for (int full = 0; full < 2; ++full) {
      const uint32_t perHead = (c.rows + 7) / 8 + (c.rows + 3 + 7) / 8;
      Scenario s{c.name, full ? withBlocks(roomy, 2 * perHead) : roomy, [&](World& w) { w.sequence(c.rows); }, c.op};
      World w;
      if (!build(s, make, &w)) return;
      if (full) CHECK(w.cache->stats().blocksFree == 0, "%s %s: the pool is full", backendName, c.name);
      const Status st = s.op(w);
      CHECK(st.isOk(), "%s %s: %s", backendName, c.name, st.message().c_str());
      CHECK(w.cache->exportSequence(w.ids[0], &bytes[full]).isOk(), "export");
      checkNoLeak(w, c.name);
    }
    CHECK(!bytes[0].empty() && bytes[0] == bytes[1], "%s %s: rebuilt in place and in fresh blocks, the rows differ", backendName,
          c.name);
  }
}

}  // namespace

int main() {
  struct BackendCase {
    const char* name;
    BackendMaker make;
  };
  std::vector<BackendCase> backends = {{"cpu", makeCpu}};
#ifdef KVC_TEST_CUDA_EMULATION
  backends.push_back({"cuda-emulated", makeEmulatedCuda});
#else
  std::printf("cuda-emulated: not built (no CUDA toolkit headers), only the CPU backend is tested\n");
#endif
  testTwoPhase();
  uint64_t operations = 0;
  for (const BackendCase& b : backends) {
    testInPlaceMatchesFresh(b.make, b.name);
    for (const auto& [base, tag] : {std::make_pair(smallConfig(Storage::kF16, Storage::kF16, false), std::string("f16")),
                                    std::make_pair(smallConfig(Storage::kInt8, Storage::kInt4, true), std::string("int8/int4 rotated")),
                                    std::make_pair(tieredConfig(), std::string("tiers f16 8 -> int4/int4")),
                                    std::make_pair(lowRankConfig(8, 8, true), std::string("lowRank 8/8 + rope")),
                                    std::make_pair(lowRankConfig(16, 8, false), std::string("lowRank 16/8"))}) {
      for (const Scenario& s : scenarios(base, tag)) {
        // Tiered streams are rebuilt through a staged copy (cpp/core/tiers/tier_rebuild.cpp):
        // keepRows itself and the in-place fallback of a full pool do not apply to them.
        // Appends age rows best effort (a failed aging leaves them where they are), so they are
        // left out here too; a snapshot's swap needs rows appended meanwhile that did not age.
        const auto has = [&](const char* w) { return s.name.find(w) != std::string::npos; };
        if (!base.tiers.empty() && (has("keepRows") || has("full pool") || has("append") || has("truncate") || has("replacePrefix after"))) {
          continue;
        }
        // Low-rank with rope: compaction runs on a stage, which needs free blocks (not on a full pool).
        if (base.lowRank() && base.ropeDims != 0 && has("compaction on a full pool")) continue;
        const int before = failures;
        const uint64_t calls = runScenario(s, b.make, b.name);
        ++operations;
        std::printf("%-14s %-80s %3llu backend calls x 2 timings: %s\n", b.name, s.name.c_str(), (unsigned long long)calls,
                    failures == before ? "ok" : "FAILED");
      }
    }
  }
  std::printf("fault injection: %llu operations, %llu failure points\n", (unsigned long long)operations,
              (unsigned long long)faultPoints);
  std::printf("kvc_transactions_tests: %d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
