// Internal state of the block being emulated: one record per CUDA thread, the barrier and
// warp-rendezvous bookkeeping shared by the fiber and thread-per-CUDA-thread executors.
// Internal to cuda/emu.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "fiber.h"
#include "launch.h"
#include "simt.h"

namespace kvc_emu {

enum class ThreadState : uint8_t { kRunning, kAtBarrier, kAtWarp, kExited };

struct EmuThread {
  uint3 idx{};
  int linear = 0;
  ThreadState state = ThreadState::kRunning;
  // Where the thread waits, for the deadlock report.
  const char* file = "";
  int line = 0;
  // Pending warp request and its result.
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0;
  int param = 0;
  int width = 32;
  uint64_t result = 0;
  FiberContext fiber;
};

struct BlockState {
  const LaunchConfig* config = nullptr;
  uint3 blockIdx{};
  void (*body)(void*) = nullptr;
  void* bodyCtx = nullptr;
  std::vector<EmuThread> threads;
  int live = 0;       // threads not exited
  int atBarrier = 0;  // threads waiting in __syncthreads
  int blocked = 0;    // threads waiting in __syncthreads or a warp rendezvous
  std::unique_ptr<unsigned char[]> dynamicShared;
  size_t dynamicSharedBytes = 0;
  // Thread-per-CUDA-thread mode only: guards everything above.
  bool threadsMode = false;
  std::mutex mutex;
  std::condition_variable released;
  FiberContext scheduler;  // fiber mode: the context that runs the block
};

// The CUDA thread running on this OS thread (fiber mode: the fiber last resumed).
extern thread_local EmuThread* tlsThread;
extern thread_local BlockState* tlsBlock;

// Bookkeeping (sync.cpp); callers hold the block lock in thread mode.
void arriveAtBarrier(BlockState& b, EmuThread& t, std::unique_lock<std::mutex>& lock);
void threadExited(BlockState& b, EmuThread& t);
// Executor hook (scheduler.cpp): returns once `t` has been released.
void waitForRelease(BlockState& b, EmuThread& t, std::unique_lock<std::mutex>& lock);

}  // namespace kvc_emu
