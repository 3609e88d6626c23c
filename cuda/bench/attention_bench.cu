// Decode-attention and copy-bandwidth timing (see attention_bench.h). Rows are random but
// valid encodings (finite halves, int8 codes with an f16 scale, int4 nibbles with scale and
// minimum): a few template blocks are made on the host and replicated on the device, which is
// as good as distinct data for DRAM traffic and keeps setup time small at 8 GB pools.
#include "attention_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../kernels/kernel_args.h"

KVC_CUDA_NAMESPACE_BEGIN
namespace bench {

namespace {

// Device buffers released on every exit path.
struct DeviceMemory {
  std::vector<void*> ptrs;
  ~DeviceMemory() {
    for (void* p : ptrs) cudaFree(p);
  }
  template <class T>
  cudaError_t alloc(T** out, uint64_t bytes) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e == cudaSuccess) ptrs.push_back(p);
    *out = static_cast<T*>(p);
    return e;
  }
};

Status failed(const char* what, cudaError_t e) {
  cudaGetLastError();
  return Status(StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorString(e));
}

#define KVC_BENCH_TRY(what, expr)                        \
  do {                                                   \
    const cudaError_t kvc_e_ = (expr);                   \
    if (kvc_e_ != cudaSuccess) {                         \
      r.status = failed((what), kvc_e_);                 \
      return r;                                          \
    }                                                    \
  } while (0)

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// One random row in format s (padding bytes zero).
void randomRow(uint8_t* row, Storage s, uint32_t D, uint32_t G, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::memset(row, 0, rowBytes(s, D, G));
  switch (s) {
    case Storage::kF32:
      for (uint32_t d = 0; d < D; ++d) {
        const float x = normal(rng);
        std::memcpy(row + 4 * d, &x, 4);
      }
      break;
    case Storage::kF16:
      for (uint32_t d = 0; d < D; ++d) put16(row + 2 * d, floatToHalf(normal(rng)));
      break;
    case Storage::kBF16:
      for (uint32_t d = 0; d < D; ++d) put16(row + 2 * d, floatToBf16(normal(rng)));
      break;
    case Storage::kInt8:
      for (uint32_t d = 0; d < D; ++d) row[d] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(rng() % 255) - 127));
      for (uint32_t g = 0; g < D / G; ++g) put16(row + D + 2 * g, floatToHalf(0.02f));
      break;
    case Storage::kInt4:
      for (uint32_t b = 0; b < D / 2; ++b) row[b] = static_cast<uint8_t>(rng());
      for (uint32_t g = 0; g < D / G; ++g) {
        put16(row + D / 2 + 4 * g, floatToHalf(0.1f));
        put16(row + D / 2 + 4 * g + 2, floatToHalf(-0.75f));
      }
      break;
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

// Times `launch` once per iteration: cudaEvents on a GPU, the host clock in the emulator
// (whose launches are synchronous).
template <class Launch>
cudaError_t timeLaunches(uint32_t warmup, uint32_t iterations, Launch launch, std::vector<double>* ms) {
  for (uint32_t i = 0; i < warmup; ++i) {
    const cudaError_t e = launch();
    if (e != cudaSuccess) return e;
  }
#if defined(__CUDACC__)
  cudaEvent_t start, stop;
  cudaError_t e = cudaEventCreate(&start);
  if (e != cudaSuccess) return e;
  e = cudaEventCreate(&stop);
  if (e != cudaSuccess) {
    cudaEventDestroy(start);
    return e;
  }
  for (uint32_t i = 0; i < iterations && e == cudaSuccess; ++i) {
    e = cudaEventRecord(start, 0);
    if (e == cudaSuccess) e = launch();
    if (e == cudaSuccess) e = cudaEventRecord(stop, 0);
    if (e == cudaSuccess) e = cudaEventSynchronize(stop);
    float t = 0;
    if (e == cudaSuccess) e = cudaEventElapsedTime(&t, start, stop);
    ms->push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return e;
#else
  for (uint32_t i = 0; i < iterations; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const cudaError_t e = launch();
    if (e != cudaSuccess) return e;
    ms->push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return cudaDeviceSynchronize();
#endif
}

}  // namespace

Timing decodeAttention(const DecodeAttentionShape& sh) {
  Timing r;
  const uint32_t D = sh.headDim, G = sh.queriesPerHead, bs = sh.blockSize;
  if (!attentionSupportsHeadDim(D) || bs == 0 || G == 0 || sh.batch == 0 || sh.kvHeads == 0 || sh.iterations == 0 ||
      sh.tokens > 0x7FFFFFFFu ||
      ((isQuantized(sh.keys) || isQuantized(sh.values)) && (sh.groupSize == 0 || D % sh.groupSize != 0)) ||
      ((sh.keys == Storage::kInt4 || sh.values == Storage::kInt4) && sh.groupSize % 2 != 0)) {
    r.status = invalidArgument("decodeAttention: unsupported shape");
    return r;
  }
  const BlockLayout L = makeBlockLayout(bs, rowBytes(sh.keys, D, sh.groupSize), rowBytes(sh.values, D, sh.groupSize));
  const uint32_t S = sh.batch * sh.kvHeads, blocksPerStream = (sh.tokens + bs - 1) / bs;
  const uint64_t blocks = static_cast<uint64_t>(S) * std::max(1u, blocksPerStream);
  std::mt19937_64 rng(sh.seed);
  DeviceMemory mem;

  // The pool: template blocks, then doubling device-to-device copies.
  uint8_t* pool = nullptr;
  KVC_BENCH_TRY("cudaMalloc of the pool", mem.alloc(&pool, blocks * L.blockBytes));
  const uint64_t templates = std::min<uint64_t>(blocks, 64);
  std::vector<uint8_t> host(templates * L.blockBytes, 0);
  for (uint64_t b = 0; b < templates; ++b) {
    uint8_t* block = host.data() + b * L.blockBytes;
    for (uint32_t slot = 0; slot < bs; ++slot) {
      randomRow(block + slot * L.keyRowBytes, sh.keys, D, sh.groupSize, rng);
      randomRow(block + L.valuesOffset + slot * L.valueRowBytes, sh.values, D, sh.groupSize, rng);
      const float beta = 0.0f;
      std::memcpy(block + L.betaOffset + 4 * slot, &beta, 4);
      const int32_t position = static_cast<int32_t>(slot);  // all visible: cutoffs are INT_MAX
      std::memcpy(block + L.positionsOffset + 4 * slot, &position, 4);
    }
  }
  KVC_BENCH_TRY("upload of the template blocks", cudaMemcpy(pool, host.data(), host.size(), cudaMemcpyHostToDevice));
  for (uint64_t filled = templates; filled < blocks;) {
    const uint64_t n = std::min(filled, blocks - filled);
    KVC_BENCH_TRY("replication of the template blocks",
                  cudaMemcpy(pool + filled * L.blockBytes, pool, n * L.blockBytes, cudaMemcpyDeviceToDevice));
    filled += n;
  }

  // Shuffled block tables (paged, not contiguous), the splits, queries and outputs.
  std::vector<int32_t> ids(blocks);
  for (uint64_t b = 0; b < blocks; ++b) ids[b] = static_cast<int32_t>(b);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<AttentionStreamArgs> streams(S);
  std::vector<AttentionWork> work;
  std::vector<int32_t> cutoffs(S, 0x7FFFFFFF);
  int32_t* tables = nullptr;
  KVC_BENCH_TRY("cudaMalloc of the tables", mem.alloc(&tables, ids.size() * sizeof(int32_t)));
  KVC_BENCH_TRY("upload of the tables", cudaMemcpy(tables, ids.data(), ids.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  for (uint32_t s = 0; s < S; ++s) {
    streams[s].blockTable = tables + static_cast<uint64_t>(s) * blocksPerStream;
    streams[s].length = static_cast<int32_t>(sh.tokens);
    streams[s].firstWork = static_cast<uint32_t>(work.size());
    streams[s].workCount = attentionSplits(streams[s].length);
    for (uint32_t i = 0; i < streams[s].workCount; ++i) {
      const uint32_t begin = i * kAttentionSplitRows;
      work.push_back(AttentionWork{s, static_cast<int32_t>(begin),
                                   static_cast<int32_t>(std::min(sh.tokens, begin + kAttentionSplitRows))});
    }
  }
  const uint64_t heads = static_cast<uint64_t>(S) * G;
  std::vector<float> queries(heads * D);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& q : queries) q = normal(rng);
  AttentionStreamArgs* dStreams = nullptr;
  AttentionWork* dWork = nullptr;
  int32_t* dCutoffs = nullptr;
  float *dQueries = nullptr, *dOut = nullptr, *dLse = nullptr, *dPartials = nullptr;
  KVC_BENCH_TRY("cudaMalloc", mem.alloc(&dStreams, S * sizeof(AttentionStreamArgs)));
  KVC_BENCH_TRY("cudaMalloc", mem.alloc(&dWork, work.size() * sizeof(AttentionWork)));
  KVC_BENCH_TRY("cudaMalloc", mem.alloc(&dCutoffs, S * sizeof(int32_t)));
  KVC_BENCH_TRY("cudaMalloc", mem.alloc(&dQueries, queries.size() * sizeof(float)));
  KVC_BENCH_TRY("cudaMalloc", mem.alloc(&dOut, queries.size() * sizeof(float)));
  KVC_BENCH_TRY("cudaMalloc", mem.alloc(&dLse, heads * sizeof(float)));
  KVC_BENCH_TRY("cudaMalloc", mem.alloc(&dPartials, work.size() * G * (D + 2) * sizeof(float)));
  KVC_BENCH_TRY("upload", cudaMemcpy(dStreams, streams.data(), S * sizeof(AttentionStreamArgs), cudaMemcpyHostToDevice));
  KVC_BENCH_TRY("upload", cudaMemcpy(dWork, work.data(), work.size() * sizeof(AttentionWork), cudaMemcpyHostToDevice));
  KVC_BENCH_TRY("upload", cudaMemcpy(dCutoffs, cutoffs.data(), S * sizeof(int32_t), cudaMemcpyHostToDevice));
  KVC_BENCH_TRY("upload", cudaMemcpy(dQueries, queries.data(), queries.size() * sizeof(float), cudaMemcpyHostToDevice));

  AttentionArgs a;
  a.pool = PoolView{pool, L};
  a.codec.keyStorage = sh.keys;
  a.codec.valueStorage = sh.values;
  a.codec.headDim = D;
  a.codec.groupSize = sh.groupSize;
  a.streamCount = S;
  a.queriesPerHead = G;
  a.tq = 1;
  a.scale = 1.0f / std::sqrt(static_cast<float>(D));
  a.streams = dStreams;
  a.queryPositions = dCutoffs;
  a.queries = dQueries;
  a.out = dOut;
  a.lse = dLse;
  a.work = dWork;
  a.workCount = static_cast<uint32_t>(work.size());
  a.partials = dPartials;
  std::vector<double> ms;
  KVC_BENCH_TRY("attention launch", timeLaunches(sh.warmup, sh.iterations, [&] { return launchAttention(a, 0); }, &ms));
  std::vector<float> out(queries.size());
  KVC_BENCH_TRY("download of the output", cudaMemcpy(out.data(), dOut, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
  if (!std::all_of(out.begin(), out.end(), [](float x) { return std::isfinite(x); })) {
    r.status = Status(StatusCode::kInternal, "decodeAttention: the output is not finite");
    return r;
  }
  r.medianMs = median(ms);
  r.bytes = static_cast<uint64_t>(S) * sh.tokens * (L.keyRowBytes + L.valueRowBytes + 8) + blocks * sizeof(int32_t) +
            queries.size() * sizeof(float);
  r.gbPerSecond = r.medianMs > 0 ? r.bytes / (r.medianMs * 1e6) : 0;
  return r;
}

Timing deviceCopyBandwidth(uint64_t bytes, uint32_t iterations) {
  Timing r;
  if (bytes == 0 || iterations == 0) {
    r.status = invalidArgument("deviceCopyBandwidth: bytes and iterations must be positive");
    return r;
  }
  DeviceMemory mem;
  uint8_t *src = nullptr, *dst = nullptr;
  KVC_BENCH_TRY("cudaMalloc of the copy source", mem.alloc(&src, bytes));
  KVC_BENCH_TRY("cudaMalloc of the copy destination", mem.alloc(&dst, bytes));
  KVC_BENCH_TRY("cudaMemset", cudaMemset(src, 1, bytes));
  std::vector<double> ms;
  KVC_BENCH_TRY("device copy",
                timeLaunches(2, iterations, [&] { return cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice); }, &ms));
  r.medianMs = median(ms);
  r.bytes = 2 * bytes;
  r.gbPerSecond = r.medianMs > 0 ? r.bytes / (r.medianMs * 1e6) : 0;
  return r;
}

}  // namespace bench
KVC_CUDA_NAMESPACE_END
