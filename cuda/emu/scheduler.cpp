// Runs a grid on the CPU: blocks one after another (so function-local `static` works as
// __shared__), the threads of a block either as fibers on the calling OS thread (default:
// fast, deterministic) or as one OS thread each (KVC_EMU_THREADS, or KVC_EMU_MODE=threads
// at run time: slow, but what ThreadSanitizer needs to see a missing barrier).
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "block_state.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace kvc_emu {

thread_local EmuThread* tlsThread = nullptr;
thread_local BlockState* tlsBlock = nullptr;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kFiberStackBytes = 256 * 1024;  // ASan frames are several times larger
#else
constexpr size_t kFiberStackBytes = 64 * 1024;
#endif
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicShared = 227 * 1024;  // sm_90 opt-in maximum

// Blocks use function-local statics as shared memory, so two grids must never interleave,
// even when several host threads launch at once.
std::mutex& launchMutex() {
  static std::mutex m;
  return m;
}

bool useThreadsMode() {
  static const bool threads = [] {
    const char* mode = std::getenv("KVC_EMU_MODE");
    if (mode && std::strcmp(mode, "threads") == 0) return true;
    if (mode && std::strcmp(mode, "fibers") == 0) return false;
#if defined(KVC_EMU_THREADS) || defined(__SANITIZE_THREAD__)
    return true;
#else
    return false;
#endif
  }();
  return threads;
}

// Fiber stacks are reused across blocks and launches of this OS thread.
std::vector<std::unique_ptr<FiberStack>>& fiberStacks(size_t count) {
  thread_local std::vector<std::unique_ptr<FiberStack>> stacks;
  while (stacks.size() < count) stacks.push_back(std::make_unique<FiberStack>(kFiberStackBytes));
  return stacks;
}

void enterThread(BlockState& b, EmuThread& t) {
  tlsThread = &t;
  tlsBlock = &b;
  threadIdx = t.idx;
}

void fiberMain(void* arg) {
  auto* t = static_cast<EmuThread*>(arg);
  BlockState& b = *tlsBlock;
  fiberStarted(b.scheduler);
  b.body(b.bodyCtx);
  threadExited(b, *t);
  switchFiber(t->fiber, b.scheduler, /*fromIsFinished=*/true);
  __builtin_unreachable();
}

cudaError_t runBlockFibers(BlockState& b) {
  auto& stacks = fiberStacks(b.threads.size());
  for (size_t i = 0; i < b.threads.size(); ++i) {
    if (!stacks[i]->ok()) return cudaErrorMemoryAllocation;
    prepareFiber(b.threads[i].fiber, *stacks[i], &fiberMain, &b.threads[i]);
  }
  // Round robin: each fiber runs until it waits or exits. Releases happen inside the
  // fibers (the last arrival frees the others), and a wait that cannot be released aborts
  // there, so a sweep that finds nothing runnable cannot happen while threads are live.
  while (b.live > 0) {
    for (EmuThread& t : b.threads) {
      if (t.state != ThreadState::kRunning) continue;
      enterThread(b, t);
      switchFiber(b.scheduler, t.fiber);
    }
  }
  tlsThread = nullptr;
  return cudaSuccess;
}

cudaError_t runBlockThreads(BlockState& b) {
  const uint3 block = blockIdx;
  const dim3 bdim = blockDim, gdim = gridDim;
  std::vector<std::thread> workers;
  workers.reserve(b.threads.size());
  for (EmuThread& t : b.threads) {
    workers.emplace_back([&b, &t, block, bdim, gdim] {
      blockIdx = block;
      blockDim = bdim;
      gridDim = gdim;
      enterThread(b, t);
      b.body(b.bodyCtx);
      threadExited(b, t);
    });
  }
  for (std::thread& w : workers) w.join();
  return cudaSuccess;
}

}  // namespace

void waitForRelease(BlockState& b, EmuThread& t, std::unique_lock<std::mutex>& lock) {
  if (b.threadsMode) {
    b.released.wait(lock, [&] { return t.state == ThreadState::kRunning; });
    return;
  }
  while (t.state != ThreadState::kRunning) switchFiber(t.fiber, b.scheduler);
  // The scheduler restored threadIdx for this fiber before resuming it.
}

cudaError_t runGrid(const LaunchConfig& config, void (*body)(void*), void* ctx) {
  const dim3 g = config.grid, k = config.block;
  const uint64_t threads = static_cast<uint64_t>(k.x) * k.y * k.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || threads == 0 || threads > kMaxThreadsPerBlock || k.z > 64 ||
      g.y > 65535 || g.z > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  if (config.sharedBytes > kMaxDynamicShared) return cudaErrorInvalidValue;

  std::lock_guard<std::mutex> guard(launchMutex());
  const bool threadsMode = useThreadsMode();
  gridDim = g;
  blockDim = k;
  for (unsigned bz = 0; bz < g.z; ++bz) {
    for (unsigned by = 0; by < g.y; ++by) {
      for (unsigned bx = 0; bx < g.x; ++bx) {
        BlockState b;
        b.config = &config;
        b.blockIdx = uint3{bx, by, bz};
        b.body = body;
        b.bodyCtx = ctx;
        b.threadsMode = threadsMode;
        b.threads.resize(threads);
        for (unsigned i = 0; i < threads; ++i) {
          EmuThread& t = b.threads[i];
          t.linear = static_cast<int>(i);
          t.idx = uint3{i % k.x, (i / k.x) % k.y, i / (k.x * k.y)};
        }
        b.live = static_cast<int>(threads);
        // Exactly the requested size (AddressSanitizer sees overflows) and 0xFF-filled so that
        // reading shared memory nobody wrote yields NaN, not a plausible zero.
        if (config.sharedBytes) {
          b.dynamicShared.reset(new unsigned char[config.sharedBytes]);
          std::memset(b.dynamicShared.get(), 0xFF, config.sharedBytes);
          b.dynamicSharedBytes = config.sharedBytes;
        }
        blockIdx = b.blockIdx;
        tlsBlock = &b;
        const cudaError_t error = threadsMode ? runBlockThreads(b) : runBlockFibers(b);
        tlsBlock = nullptr;
        if (error != cudaSuccess) return error;
      }
    }
  }
  return cudaSuccess;
}

}  // namespace kvc_emu
