// Fibers for the SIMT emulator: mmap'd stacks with a guard page and a hand-written x86-64
// context switch (callee-saved registers + rsp, no signal-mask system call as in
// swapcontext). Internal to cuda/emu; kernels never include this.
#pragma once
#include <cstddef>

namespace kvc_emu {

// A saved execution context. For AddressSanitizer the stack bounds travel with it, so that
// ASan can follow the switch (see fiber.cpp).
struct FiberContext {
  void* sp = nullptr;
  const void* stackBottom = nullptr;
  size_t stackSize = 0;
  void* fakeStack = nullptr;
};

// One fiber stack: `size` usable bytes above a PROT_NONE guard page, so an overflow faults
// instead of silently corrupting the neighbouring fiber.
class FiberStack {
 public:
  explicit FiberStack(size_t size);
  ~FiberStack();
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  void* bottom() const { return usable_; }
  size_t size() const { return size_; }
  bool ok() const { return usable_ != nullptr; }

 private:
  void* mapping_ = nullptr;
  size_t mappingBytes_ = 0;
  void* usable_ = nullptr;
  size_t size_ = 0;
};

// Prepares `ctx` so that the first switch into it calls entry(arg) on `stack`.
// entry must never return: it ends by switching away for good (switchFiber(..., true)).
void prepareFiber(FiberContext& ctx, FiberStack& stack, void (*entry)(void*), void* arg);

// Saves the running context into `from` and resumes `to`. `fromIsFinished` tells ASan that
// `from` will never be resumed (its fake stack can be released).
void switchFiber(FiberContext& from, FiberContext& to, bool fromIsFinished = false);

// Must be called first thing in a fiber entry function (ASan bookkeeping of the switch
// that started the fiber); `from` receives the bounds of the stack that switched to us.
void fiberStarted(FiberContext& from);

}  // namespace kvc_emu
