// Self-test of the SIMT emulator (cuda/emu): barriers, warp intrinsics, dynamic shared
// memory poisoning, exited threads at barriers, launch errors, and the aborts for deadlocks
// and undefined warp use (run in forked children). Runs in both execution modes.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../../compat.cuh"

namespace {

int failures = 0;

#define EXPECT(cond, ...)                                     \
  do {                                                        \
    if (!(cond)) {                                            \
      ++failures;                                             \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                      \
      std::fprintf(stderr, "\n");                             \
    }                                                         \
  } while (0)

// ---- kernels ------------------------------------------------------------------------

// Tree reduction through static shared memory: out[block] = sum of in[block * 256 + i].
__global__ void blockSumKernel(const float* in, float* out) {
  __shared__ float partial[256];
  const unsigned t = threadIdx.x;
  partial[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

// Each warp reduces its 32 values three ways; lane 0 writes them.
__global__ void warpReduceKernel(const int* in, int* xorSum, int* downSum, int* broadcast) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x % 32;
  int a = in[i], b = in[i];
  for (int offset = 16; offset > 0; offset /= 2) {
    a += __shfl_xor_sync(0xFFFFFFFFu, a, offset);
    b += __shfl_down_sync(0xFFFFFFFFu, b, offset);
  }
  // After the xor butterfly every lane holds the sum; check that, then broadcast lane 7's input.
  const int fromLane7 = __shfl_sync(0xFFFFFFFFu, in[i], 7);
  xorSum[i] = a;
  if (lane == 0) downSum[i / 32] = b;
  broadcast[i] = fromLane7;
}

// Inclusive prefix sum within segments of 8 lanes (width 8).
__global__ void segmentScanKernel(const int* in, int* out) {
  const unsigned i = threadIdx.x;
  int v = in[i];
  for (int d = 1; d < 8; d *= 2) {
    const int up = __shfl_up_sync(0xFFFFFFFFu, v, d, 8);
    if (static_cast<int>(i % 8) >= d) v += up;
  }
  out[i] = v;
}

__global__ void voteKernel(const int* pred, unsigned* ballot, int* any, int* all) {
  const unsigned i = threadIdx.x;
  const unsigned b = __ballot_sync(0xFFFFFFFFu, pred[i]);
  const int a = __any_sync(0xFFFFFFFFu, pred[i]);
  const int l = __all_sync(0xFFFFFFFFu, pred[i]);
  if (i % 32 == 0) {
    ballot[i / 32] = b;
    any[i / 32] = a;
    all[i / 32] = l;
  }
}

// Half-warp groups exchange independently (two disjoint masks in one warp).
__global__ void partialMaskKernel(int* out) {
  const unsigned lane = threadIdx.x;
  const unsigned mask = lane < 16 ? 0x0000FFFFu : 0xFFFF0000u;
  int v = static_cast<int>(lane);
  for (int offset = 8; offset > 0; offset /= 2) v += __shfl_xor_sync(mask, v, offset);
  __syncwarp(mask);
  out[lane] = v;
}

// Checks that dynamic shared memory arrives 0xFF-filled with the requested size, then dirties it.
__global__ void dynamicSharedKernel(int* poisonedBytes, unsigned long long* sizeSeen) {
  KVC_DYNAMIC_SHARED(unsigned char, smem);
  const size_t bytes = kvc_emu::dynamicSharedBytes();
  __syncthreads();
  if (threadIdx.x == 0) {
    int ok = 0;
    for (size_t i = 0; i < bytes; ++i) ok += smem[i] == 0xFF;
    poisonedBytes[blockIdx.x] = ok;
    sizeSeen[blockIdx.x] = bytes;
  }
  __syncthreads();
  for (size_t i = threadIdx.x; i < bytes; i += blockDim.x) smem[i] = 0;
  // A float nobody wrote reads as NaN.
  if (threadIdx.x == 0 && blockIdx.x == 0) {
    KVC_DYNAMIC_SHARED(float, f);
    (void)f;
  }
}

__global__ void nanReadKernel(float* out) {
  KVC_DYNAMIC_SHARED(float, f);
  if (threadIdx.x == 0) out[0] = f[3];
}

// Threads past n exit early; the others still pass two barriers and reduce.
__global__ void earlyExitKernel(int n, int* out) {
  __shared__ int count;
  if (static_cast<int>(threadIdx.x) >= n) return;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  atomicAdd(&count, 1);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = count;
}

__global__ void indexKernel(int* out) {
  const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned perBlock = blockDim.x * blockDim.y * blockDim.z;
  out[block * perBlock + linear] = static_cast<int>(threadIdx.x + 10 * threadIdx.y + 100 * threadIdx.z +
                                                    1000 * blockIdx.x + 10000 * blockIdx.y + 100000 * blockIdx.z);
}

__global__ void atomicKernel(float* sum, int* maxValue) {
  atomicAdd(sum, 0.5f);
  atomicMax(maxValue, static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x));
}

__global__ void emptyKernel() {}

// Thread 0 waits at __syncthreads, the rest of warp 0 at a __syncwarp that needs lane 0.
__global__ void deadlockKernel() {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    __syncwarp();
  }
}

// Lanes 16..31 exit while lanes 0..15 shuffle with a full mask: undefined on the device.
__global__ void exitedLaneShuffleKernel(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, static_cast<int>(threadIdx.x), 1);
}

// ---- helpers --------------------------------------------------------------------------

template <class T>
T* deviceCopy(const std::vector<T>& host) {
  T* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), host.size() * sizeof(T));
  cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

template <class T>
std::vector<T> hostCopy(const T* d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

// Runs fn in a forked child; returns (terminated by SIGABRT, captured stderr).
std::pair<bool, std::string> runInChild(const std::function<void()>& fn) {
  int pipeFds[2];
  if (pipe(pipeFds) != 0) return {false, "pipe failed"};
  const pid_t pid = fork();
  if (pid == 0) {
    close(pipeFds[0]);
    dup2(pipeFds[1], 2);
    fn();
    _exit(0);
  }
  close(pipeFds[1]);
  std::string err;
  char buf[4096];
  ssize_t n;
  while ((n = read(pipeFds[0], buf, sizeof buf)) > 0) err.append(buf, static_cast<size_t>(n));
  close(pipeFds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, err};
}

// ---- tests ----------------------------------------------------------------------------

void testBlockReduction() {
  const int blocks = 5, threads = 256;
  std::vector<float> in(blocks * threads);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>((i * 37) % 101) - 50.0f;
  float* dIn = deviceCopy(in);
  float* dOut = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&dOut), blocks * sizeof(float));
  KVC_LAUNCH(blockSumKernel, dim3(blocks), dim3(threads), 0, 0)(dIn, dOut);
  EXPECT(cudaGetLastError() == cudaSuccess, "launch");
  const auto out = hostCopy(dOut, blocks);
  for (int b = 0; b < blocks; ++b) {
    float expect = 0;
    for (int i = 0; i < threads; ++i) expect += in[b * threads + i];  // integers: exact in any order
    EXPECT(out[b] == expect, "block %d: %g != %g", b, out[b], expect);
  }
  cudaFree(dIn);
  cudaFree(dOut);
}

void testWarpShuffles() {
  const int n = 128;
  std::vector<int> in(n);
  for (int i = 0; i < n; ++i) in[i] = (i * 7919) % 1000 - 500;
  int* dIn = deviceCopy(in);
  int *dXor, *dDown, *dBroadcast;
  cudaMalloc(reinterpret_cast<void**>(&dXor), n * sizeof(int));
  cudaMalloc(reinterpret_cast<void**>(&dDown), n / 32 * sizeof(int));
  cudaMalloc(reinterpret_cast<void**>(&dBroadcast), n * sizeof(int));
  KVC_LAUNCH(warpReduceKernel, dim3(2), dim3(64), 0, 0)(dIn, dXor, dDown, dBroadcast);
  const auto xorSum = hostCopy(dXor, n), downSum = hostCopy(dDown, n / 32), broadcast = hostCopy(dBroadcast, n);
  for (int w = 0; w < n / 32; ++w) {
    int expect = 0;
    for (int l = 0; l < 32; ++l) expect += in[w * 32 + l];
    EXPECT(downSum[w] == expect, "down warp %d: %d != %d", w, downSum[w], expect);
    for (int l = 0; l < 32; ++l) {
      EXPECT(xorSum[w * 32 + l] == expect, "xor warp %d lane %d", w, l);
      EXPECT(broadcast[w * 32 + l] == in[w * 32 + 7], "broadcast warp %d lane %d", w, l);
    }
  }

  std::vector<int> ones(32);
  for (int i = 0; i < 32; ++i) ones[i] = i + 1;
  int* dOnes = deviceCopy(ones);
  int* dScan;
  cudaMalloc(reinterpret_cast<void**>(&dScan), 32 * sizeof(int));
  KVC_LAUNCH(segmentScanKernel, dim3(1), dim3(32), 0, 0)(dOnes, dScan);
  const auto scan = hostCopy(dScan, 32);
  for (int i = 0; i < 32; ++i) {
    int expect = 0;
    for (int j = i / 8 * 8; j <= i; ++j) expect += ones[j];
    EXPECT(scan[i] == expect, "scan lane %d: %d != %d", i, scan[i], expect);
  }

  int* dPartial;
  cudaMalloc(reinterpret_cast<void**>(&dPartial), 32 * sizeof(int));
  KVC_LAUNCH(partialMaskKernel, dim3(1), dim3(32), 0, 0)(dPartial);
  const auto partial = hostCopy(dPartial, 32);
  for (int i = 0; i < 32; ++i) {
    const int expect = i < 16 ? 120 : 376;  // 0+..+15, 16+..+31
    EXPECT(partial[i] == expect, "partial mask lane %d: %d", i, partial[i]);
  }
  cudaFree(dIn);
  cudaFree(dXor);
  cudaFree(dDown);
  cudaFree(dBroadcast);
  cudaFree(dOnes);
  cudaFree(dScan);
  cudaFree(dPartial);
}

void testVotes() {
  std::vector<int> pred(96, 0);
  for (int i = 0; i < 32; ++i) pred[i] = (i % 3) == 0;  // warp 0: mixed
  for (int i = 32; i < 64; ++i) pred[i] = 1;            // warp 1: all
  int* dPred = deviceCopy(pred);                       // warp 2: none
  unsigned* dBallot;
  int *dAny, *dAll;
  cudaMalloc(reinterpret_cast<void**>(&dBallot), 3 * sizeof(unsigned));
  cudaMalloc(reinterpret_cast<void**>(&dAny), 3 * sizeof(int));
  cudaMalloc(reinterpret_cast<void**>(&dAll), 3 * sizeof(int));
  KVC_LAUNCH(voteKernel, dim3(1), dim3(96), 0, 0)(dPred, dBallot, dAny, dAll);
  const auto ballot = hostCopy(dBallot, 3);
  const auto any = hostCopy(dAny, 3), all = hostCopy(dAll, 3);
  unsigned expect0 = 0;
  for (int i = 0; i < 32; ++i) expect0 |= static_cast<unsigned>(pred[i]) << i;
  EXPECT(ballot[0] == expect0, "ballot warp 0: %08x", ballot[0]);
  EXPECT(ballot[1] == 0xFFFFFFFFu && ballot[2] == 0, "ballot all/none");
  EXPECT(any[0] && !all[0] && any[1] && all[1] && !any[2] && !all[2], "any/all");
  cudaFree(dPred);
  cudaFree(dBallot);
  cudaFree(dAny);
  cudaFree(dAll);
}

void testDynamicShared() {
  const int blocks = 3;
  const size_t bytes = 1000;  // deliberately not a multiple of anything
  int* dPoison;
  unsigned long long* dSize;
  cudaMalloc(reinterpret_cast<void**>(&dPoison), blocks * sizeof(int));
  cudaMalloc(reinterpret_cast<void**>(&dSize), blocks * sizeof(unsigned long long));
  KVC_LAUNCH(dynamicSharedKernel, dim3(blocks), dim3(64), bytes, 0)(dPoison, dSize);
  const auto poison = hostCopy(dPoison, blocks);
  const auto size = hostCopy(dSize, blocks);
  for (int b = 0; b < blocks; ++b) {
    EXPECT(poison[b] == static_cast<int>(bytes), "block %d saw %d poisoned bytes", b, poison[b]);
    EXPECT(size[b] == bytes, "block %d size %llu", b, size[b]);
  }
  float* dNan;
  cudaMalloc(reinterpret_cast<void**>(&dNan), sizeof(float));
  KVC_LAUNCH(nanReadKernel, dim3(1), dim3(32), 64, 0)(dNan);
  EXPECT(std::isnan(hostCopy(dNan, 1)[0]), "unwritten dynamic shared float is NaN");
  cudaFree(dPoison);
  cudaFree(dSize);
  cudaFree(dNan);
}

void testEarlyExit() {
  int* dOut;
  cudaMalloc(reinterpret_cast<void**>(&dOut), 2 * sizeof(int));
  KVC_LAUNCH(earlyExitKernel, dim3(2), dim3(128), 0, 0)(37, dOut);
  const auto out = hostCopy(dOut, 2);
  EXPECT(out[0] == 37 && out[1] == 37, "early exit: %d %d", out[0], out[1]);
  cudaFree(dOut);
}

void testIndices() {
  const dim3 grid(2, 3, 2), block(4, 2, 3);
  const int total = 2 * 3 * 2 * 4 * 2 * 3;
  int* dOut;
  cudaMalloc(reinterpret_cast<void**>(&dOut), total * sizeof(int));
  KVC_LAUNCH(indexKernel, grid, block, 0, 0)(dOut);
  const auto out = hostCopy(dOut, total);
  int i = 0;
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 3; ++by)
      for (unsigned bx = 0; bx < 2; ++bx)
        for (unsigned tz = 0; tz < 3; ++tz)
          for (unsigned ty = 0; ty < 2; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx, ++i) {
              const int expect = static_cast<int>(tx + 10 * ty + 100 * tz + 1000 * bx + 10000 * by + 100000 * bz);
              EXPECT(out[i] == expect, "index %d: %d != %d", i, out[i], expect);
            }
  cudaFree(dOut);
}

void testAtomicsAndErrors() {
  float* dSum;
  int* dMax;
  cudaMalloc(reinterpret_cast<void**>(&dSum), sizeof(float));
  cudaMalloc(reinterpret_cast<void**>(&dMax), sizeof(int));
  cudaMemset(dSum, 0, sizeof(float));
  cudaMemset(dMax, 0, sizeof(int));
  KVC_LAUNCH(atomicKernel, dim3(4), dim3(96), 0, 0)(dSum, dMax);
  EXPECT(hostCopy(dSum, 1)[0] == 192.0f, "atomicAdd float: %g", hostCopy(dSum, 1)[0]);
  EXPECT(hostCopy(dMax, 1)[0] == 383, "atomicMax int");
  cudaFree(dSum);
  cudaFree(dMax);

  EXPECT(cudaGetLastError() == cudaSuccess, "no pending error");
  KVC_LAUNCH(emptyKernel, dim3(1), dim3(2048), 0, 0)();
  EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads per block is rejected");
  EXPECT(cudaGetLastError() == cudaSuccess, "cudaGetLastError clears the error");
  KVC_LAUNCH(emptyKernel, dim3(0), dim3(32), 0, 0)();
  EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration, "empty grid is rejected");
}

void testAborts() {
  auto deadlock = runInChild([] { KVC_LAUNCH(deadlockKernel, dim3(1), dim3(64), 0, 0)(); });
  EXPECT(deadlock.first, "deadlock aborts");
  EXPECT(deadlock.second.find("deadlock") != std::string::npos, "message names the deadlock: %s",
         deadlock.second.c_str());
  EXPECT(deadlock.second.find("__syncthreads at") != std::string::npos &&
             deadlock.second.find("__syncwarp(mask 0xffffffff) at") != std::string::npos &&
             deadlock.second.find("emu_selftest.cpp:") != std::string::npos,
         "message lists each wait point: %s", deadlock.second.c_str());

  auto exited = runInChild([] {
    int* dOut;
    cudaMalloc(reinterpret_cast<void**>(&dOut), 32 * sizeof(int));
    KVC_LAUNCH(exitedLaneShuffleKernel, dim3(1), dim3(32), 0, 0)(dOut);
  });
  EXPECT(exited.first, "shuffle with exited lanes in the mask aborts");
  EXPECT(exited.second.find("exited") != std::string::npos, "message: %s", exited.second.c_str());
}

void runAll(const char* mode) {
  const int before = failures;
  testBlockReduction();
  testWarpShuffles();
  testVotes();
  testDynamicShared();
  testEarlyExit();
  testIndices();
  testAtomicsAndErrors();
  testAborts();
  std::printf("%s mode: %s\n", mode, failures == before ? "ok" : "FAILED");
}

}  // namespace

int main() {
  // The execution mode is read once per process, so thread mode runs in a child.
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("KVC_EMU_MODE", "threads", 1);
    runAll("threads");
    std::fflush(stdout);
    _exit(failures ? 1 : 0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  const bool threadsOk = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!threadsOk) ++failures;

  setenv("KVC_EMU_MODE", "fibers", 1);
  runAll("fibers");
  std::printf("%s\n", failures ? "emu_selftest: FAILED" : "emu_selftest: all passed");
  return failures ? 1 : 0;
}
