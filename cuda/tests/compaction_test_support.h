// Shared pieces of the CUDA compaction tests (cuda/tests/compaction_*_tests.cpp): the check
// counter, device arrays of the emulator, random inputs, and a pair of backends (emulated CUDA
// and CPU) holding the same stored rows.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cpu/compaction/compaction.h"
#include "cpu/compaction/topk.h"
#include "cpu/thread_pool.h"
#include "kvc/row_select.h"
#include "check.h"
#include "cuda/backend/cuda_compaction.h"
#include "cuda/emulated_backend.h"
#include "cuda/kernels/compaction/compaction_args.h"
#include "kvc/backend.h"
#include "reference.h"

namespace cctest {

namespace ce = kvc::cuda_emu;

// A device array of the emulator (host memory behind cudaMalloc), poisoned with NaN bytes.
template <class T>
class Dev {
 public:
  explicit Dev(size_t n) : n_(n) {
    cudaMalloc(reinterpret_cast<void**>(&p_), std::max<size_t>(1, n) * sizeof(T));
    std::memset(static_cast<void*>(p_), 0xFF, n * sizeof(T));
  }
  explicit Dev(const std::vector<T>& v) : Dev(v.size()) { upload(v); }
  ~Dev() { cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void upload(const std::vector<T>& v) { cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice); }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
  size_t n_;
};

inline std::vector<float> randomVector(std::mt19937_64& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng) * scale;
  return v;
}

// ---- compactStreams: emulated CUDA backend vs the CPU compaction -------------------------------

struct ParityConfig {
  kvc::Storage keys, values;
  bool rotate;
};

class TwoBackends {
 public:
  TwoBackends(const ParityConfig& c, uint32_t D, uint32_t blockSize, std::mt19937_64& rng) : D_(D), rng_(rng) {
    cuda_ = kvc::createEmulatedCudaBackend(kvc::BackendOptions{});
    cpu_ = kvc::createCpuBackend(kvc::BackendOptions{1});
    layout_ = kvc::makeBlockLayout(blockSize, kvc::rowBytes(c.keys, D, kGroup), kvc::rowBytes(c.values, D, kGroup));
    for (kvc::Backend* b : {cuda_.get(), cpu_.get()}) {
      EXPECT(b->reservePool(kCapacity, layout_.blockBytes).isOk(), "reservePool");
      EXPECT(b->commitPool(kCapacity).isOk(), "commitPool");
    }
    codec_.keyStorage = c.keys;
    codec_.valueStorage = c.values;
    codec_.headDim = D;
    codec_.groupSize = kGroup;
    if (c.rotate) {
      keySigns_.resize(D);
      valueSigns_.resize(D);
      for (float& s : keySigns_) s = (rng_() & 1) ? 1.0f : -1.0f;
      for (float& s : valueSigns_) s = (rng_() & 1) ? 1.0f : -1.0f;
      codec_.keySigns = keySigns_.data();
      codec_.valueSigns = valueSigns_.data();
    }
  }
  static constexpr uint32_t kCapacity = 512, kGroup = 32;
  kvc::PoolView pool(kvc::Backend& b) const { return kvc::PoolView{b.poolBase(), layout_}; }
  kvc::Backend& cuda() { return *cuda_; }
  kvc::Backend& cpu() { return *cpu_; }
  const kvc::RowCodec& codec() const { return codec_; }
  uint32_t D() const { return D_; }
  const kvc::BlockLayout& layout() const { return layout_; }

  std::vector<int32_t> newTable(uint32_t rows) {
    std::vector<int32_t> t;
    while (t.size() * layout_.blockSize < rows) t.push_back(next_++);
    EXPECT(next_ <= static_cast<int32_t>(kCapacity), "pool too small");
    return t;
  }

  // T LLM-like rows in a fresh stream of both backends: an outlier key channel, a strong
  // attention sink at row 0, small random biases (a stream compacted before) when asked.
  std::vector<int32_t> appendStream(uint32_t T, bool withBias) {
    std::vector<int32_t> table = newTable(T);
    std::normal_distribution<float> normal;
    std::vector<float> keys(static_cast<size_t>(T) * D_), values(keys.size()), beta(T, 0.0f);
    for (uint32_t r = 0; r < T; ++r)
      for (uint32_t d = 0; d < D_; ++d) {
        keys[r * D_ + d] = normal(rng_) * (d == 3 ? 6.0f : 1.0f) + (r == 0 ? 2.0f : 0.0f);
        values[r * D_ + d] = normal(rng_);
      }
    if (withBias)
      for (float& b : beta) b = 0.3f * normal(rng_);
    std::vector<int32_t> positions(T);
    std::iota(positions.begin(), positions.end(), 0);
    kvc::AppendParams p;
    p.pool = pool(*cuda_);
    p.codec = codec_;
    p.streamCount = 1;
    p.tokens = T;
    const int32_t* tables[1] = {table.data()};
    const int32_t start[1] = {0};
    p.blockTables = tables;
    p.startRow = start;
    p.keys = keys.data();
    p.values = values.data();
    p.positions = positions.data();
    p.beta = beta.data();
    const kvc::Status s = cuda_->append(p);
    EXPECT(s.isOk(), "append: %s", s.message().c_str());
    // The CPU pool gets the very bytes the device stored (the two appends may round a
    // quantization tie differently), so both compactions start from identical rows.
    std::vector<uint8_t> k(static_cast<size_t>(T) * layout_.keyRowBytes), v(static_cast<size_t>(T) * layout_.valueRowBytes);
    std::vector<float> b(T);
    std::vector<int32_t> pos(T);
    const kvc::StreamView view{table.data(), static_cast<int32_t>(T)};
    EXPECT(cuda_->readRawRows(pool(*cuda_), view, 0, T, k.data(), v.data(), b.data(), pos.data()).isOk(), "readRawRows");
    EXPECT(cpu_->writeRawRows(pool(*cpu_), view, 0, T, k.data(), v.data(), b.data(), pos.data()).isOk(), "writeRawRows");
    return table;
  }

 private:
  uint32_t D_;
  std::mt19937_64& rng_;
  std::unique_ptr<kvc::Backend> cuda_, cpu_;
  kvc::BlockLayout layout_;
  kvc::RowCodec codec_;
  std::vector<float> keySigns_, valueSigns_;
  int32_t next_ = 0;
};

void testGemm(std::mt19937_64& rng);
void testCholesky(std::mt19937_64& rng);
void testTopK(std::mt19937_64& rng);
void testParity(std::mt19937_64& rng);
void testEviction(std::mt19937_64& rng);
void testErrors(std::mt19937_64& rng);
// Largest device-vs-CPU differences of the parity runs (printed by main).
struct ParitySummary {
  double worstBeta = 0, worstValue = 0;
  int illConditioned = 0, fitsCompared = 0;
};
ParitySummary paritySummary();

}  // namespace cctest
