// __syncthreads and the warp rendezvous of the emulator. Exited threads drop out of
// barriers; a barrier or warp exchange that no thread can pass aborts with every thread's
// wait point, and undefined uses of warp intrinsics (exited or absent lanes in the mask,
// lanes disagreeing on the operation) abort rather than return arbitrary values.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "block_state.h"

namespace kvc_emu {

namespace {

const char* opName(WarpOp op) {
  switch (op) {
    case WarpOp::kSync: return "__syncwarp";
    case WarpOp::kShfl: return "__shfl_sync";
    case WarpOp::kShflUp: return "__shfl_up_sync";
    case WarpOp::kShflDown: return "__shfl_down_sync";
    case WarpOp::kShflXor: return "__shfl_xor_sync";
    case WarpOp::kBallot: return "__ballot_sync";
    case WarpOp::kAny: return "__any_sync";
    case WarpOp::kAll: return "__all_sync";
  }
  return "?";
}

std::string describeWait(const EmuThread& t) {
  char buf[512];
  switch (t.state) {
    case ThreadState::kRunning: return "running";
    case ThreadState::kExited: return "exited";
    case ThreadState::kAtBarrier: std::snprintf(buf, sizeof buf, "__syncthreads at %s:%d", t.file, t.line); break;
    case ThreadState::kAtWarp:
      std::snprintf(buf, sizeof buf, "%s(mask 0x%08x) at %s:%d", opName(t.op), t.mask, t.file, t.line);
      break;
  }
  return buf;
}

[[noreturn]] void fail(const BlockState& b, const char* what) {
  std::fprintf(stderr, "kvc_emu: %s in kernel %s, block (%u,%u,%u); thread states:\n", what, b.config->name,
               b.blockIdx.x, b.blockIdx.y, b.blockIdx.z);
  // Consecutive threads in the same state are printed as one range.
  const size_t n = b.threads.size();
  size_t first = 0;
  while (first < n) {
    const std::string state = describeWait(b.threads[first]);
    size_t last = first;
    while (last + 1 < n && describeWait(b.threads[last + 1]) == state) ++last;
    std::fprintf(stderr, "  threads %zu-%zu (warps %zu-%zu): %s\n", first, last, first / 32, last / 32, state.c_str());
    first = last + 1;
  }
  std::fflush(stderr);
  std::abort();
}

void checkDeadlock(const BlockState& b) {
  if (b.live > 0 && b.blocked == b.live) fail(b, "deadlock: no thread can proceed");
}

void releaseBarrierIfComplete(BlockState& b) {
  if (b.atBarrier == 0 || b.atBarrier != b.live) return;
  for (EmuThread& u : b.threads) {
    if (u.state == ThreadState::kAtBarrier) u.state = ThreadState::kRunning;
  }
  b.blocked -= b.atBarrier;
  b.atBarrier = 0;
  if (b.threadsMode) b.released.notify_all();
}

int sourceLane(const EmuThread& t, int lane) {
  const int width = t.width;
  const int base = lane & ~(width - 1);
  int src = lane;
  switch (t.op) {
    case WarpOp::kShfl: src = base + (t.param & (width - 1)); break;
    case WarpOp::kShflUp: src = lane - t.param >= base ? lane - t.param : lane; break;
    case WarpOp::kShflDown: src = lane + t.param < base + width ? lane + t.param : lane; break;
    case WarpOp::kShflXor: src = (lane ^ t.param) < base + width ? (lane ^ t.param) : lane; break;
    default: break;
  }
  return src;
}

// The lanes of `mask` in the warp starting at `warpBase` all wait at a rendezvous with the
// same mask: compute every lane's result and release them.
void completeWarpExchange(BlockState& b, int warpBase, unsigned mask) {
  EmuThread* lanes[32] = {};
  for (int j = 0; j < 32; ++j) {
    if (mask >> j & 1u) lanes[j] = &b.threads[warpBase + j];
  }
  const EmuThread* leader = nullptr;
  for (int j = 0; j < 32; ++j) {
    if (!lanes[j]) continue;
    if (!leader) leader = lanes[j];
    if (lanes[j]->op != leader->op || lanes[j]->width != leader->width) {
      fail(b, "lanes of one warp exchange disagree on the operation or width");
    }
  }
  const WarpOp op = leader->op;
  uint64_t ballot = 0;
  for (int j = 0; j < 32; ++j) {
    if (lanes[j] && lanes[j]->value) ballot |= 1ull << j;
  }
  for (int j = 0; j < 32; ++j) {
    EmuThread* t = lanes[j];
    if (!t) continue;
    switch (op) {
      case WarpOp::kSync: t->result = 0; break;
      case WarpOp::kBallot: t->result = ballot; break;
      case WarpOp::kAny: t->result = ballot != 0; break;
      case WarpOp::kAll: t->result = ballot == mask; break;
      default: {
        const int src = sourceLane(*t, j);
        if (!(mask >> src & 1u)) fail(b, "a shuffle reads a lane outside its mask (undefined on the device)");
        t->result = lanes[src]->value;
        break;
      }
    }
  }
  for (int j = 0; j < 32; ++j) {
    if (lanes[j]) {
      lanes[j]->state = ThreadState::kRunning;
      --b.blocked;
    }
  }
  if (b.threadsMode) b.released.notify_all();
}

// Returns true when every lane named by the request of `t` is waiting with the same mask.
bool warpGroupReady(BlockState& b, const EmuThread& t) {
  const int warpBase = t.linear & ~31;
  for (int j = 0; j < 32; ++j) {
    if (!(t.mask >> j & 1u)) continue;
    const size_t index = static_cast<size_t>(warpBase + j);
    if (index >= b.threads.size()) fail(b, "a warp mask names a lane that does not exist in this block");
    const EmuThread& u = b.threads[index];
    if (u.state == ThreadState::kExited) fail(b, "a warp mask names a lane that has exited");
    if (u.state != ThreadState::kAtWarp || u.mask != t.mask) return false;
  }
  return true;
}

std::unique_lock<std::mutex> lockBlock(BlockState& b) {
  return b.threadsMode ? std::unique_lock<std::mutex>(b.mutex) : std::unique_lock<std::mutex>();
}

}  // namespace

void syncThreads(const char* file, int line) {
  BlockState& b = *tlsBlock;
  EmuThread& t = *tlsThread;
  auto lock = lockBlock(b);
  t.state = ThreadState::kAtBarrier;
  t.file = file;
  t.line = line;
  ++b.atBarrier;
  ++b.blocked;
  releaseBarrierIfComplete(b);
  if (t.state != ThreadState::kRunning) {
    checkDeadlock(b);
    waitForRelease(b, t, lock);
  }
}

uint64_t warpExchange(WarpOp op, unsigned mask, uint64_t value, int param, int width, const char* file, int line) {
  BlockState& b = *tlsBlock;
  EmuThread& t = *tlsThread;
  auto lock = lockBlock(b);
  const int lane = t.linear & 31;
  t.op = op;
  t.mask = mask;
  t.value = value;
  t.param = param;
  t.width = width;
  t.file = file;
  t.line = line;
  t.state = ThreadState::kAtWarp;
  ++b.blocked;
  if (!(mask >> lane & 1u)) fail(b, "a warp intrinsic is called with a mask that excludes the calling lane");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) fail(b, "shuffle width is not a power of two <= 32");
  if (warpGroupReady(b, t)) {
    completeWarpExchange(b, t.linear & ~31, mask);
  } else {
    checkDeadlock(b);
    waitForRelease(b, t, lock);
  }
  return t.result;
}

void threadExited(BlockState& b, EmuThread& t) {
  auto lock = lockBlock(b);
  t.state = ThreadState::kExited;
  --b.live;
  // A lane waiting for this one in a warp exchange can never be served.
  const int warpBase = t.linear & ~31;
  const int lane = t.linear & 31;
  for (int j = 0; j < 32; ++j) {
    const size_t index = static_cast<size_t>(warpBase + j);
    if (index >= b.threads.size()) break;
    const EmuThread& u = b.threads[index];
    if (u.state == ThreadState::kAtWarp && (u.mask >> lane & 1u)) {
      fail(b, "a thread exited while another lane waits for it in a warp exchange");
    }
  }
  releaseBarrierIfComplete(b);
  checkDeadlock(b);
}

void* dynamicShared() { return tlsBlock ? tlsBlock->dynamicShared.get() : nullptr; }
size_t dynamicSharedBytes() { return tlsBlock ? tlsBlock->dynamicSharedBytes : 0; }

}  // namespace kvc_emu
