// x86-64 System V context switch and fiber stacks for the SIMT emulator. Only what the
// ABI says survives a call is saved: rbx, rbp, r12-r15, rsp, and the MXCSR / x87 control
// words; everything else is caller-saved, so switching costs a few dozen instructions.
#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if !defined(__x86_64__)
#error "cuda/emu fibers implement the x86-64 System V context switch only"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define KVC_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVC_EMU_ASAN 1
#endif
#endif

#if defined(KVC_EMU_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

// kvc_emu_switch_context(void** saveSp /*rdi*/, void* nextSp /*rsi*/): pushes the
// callee-saved state on the current stack, stores rsp, loads the other stack and pops its
// state; `ret` then continues wherever that context last called this function (or in the
// trampoline, for a fresh fiber).
// kvc_emu_fiber_trampoline: first code of a fresh fiber; r12 = argument, r13 = entry.
asm(R"(
    .text
    .globl kvc_emu_switch_context
    .hidden kvc_emu_switch_context
    .type kvc_emu_switch_context, @function
    .p2align 4
kvc_emu_switch_context:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size kvc_emu_switch_context, .-kvc_emu_switch_context

    .globl kvc_emu_fiber_trampoline
    .hidden kvc_emu_fiber_trampoline
    .type kvc_emu_fiber_trampoline, @function
    .p2align 4
kvc_emu_fiber_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq %r12, %rdi
    callq *%r13
    ud2
    .cfi_endproc
    .size kvc_emu_fiber_trampoline, .-kvc_emu_fiber_trampoline
)");

extern "C" void kvc_emu_switch_context(void** saveSp, void* nextSp);
extern "C" void kvc_emu_fiber_trampoline();

namespace kvc_emu {

FiberStack::FiberStack(size_t size) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_ = (size + page - 1) / page * page;
  mappingBytes_ = size_ + page;
  void* p = mmap(nullptr, mappingBytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    mapping_ = nullptr;
    return;
  }
  mapping_ = p;
  // Stacks grow down: the guard page sits below the lowest usable address.
  mprotect(p, page, PROT_NONE);
  usable_ = static_cast<char*>(p) + page;
}

FiberStack::~FiberStack() {
  if (mapping_) munmap(mapping_, mappingBytes_);
}

void prepareFiber(FiberContext& ctx, FiberStack& stack, void (*entry)(void*), void* arg) {
  // Initial frame, read by the pops of kvc_emu_switch_context (lowest address first):
  //   [mxcsr | fpucw] r15 r14 r13 r12 rbx rbp  return-address = trampoline
  // The return slot sits at top - 8 so that rsp is 16-byte aligned after `ret`, and the
  // trampoline's `call` enters `entry` with the alignment the ABI expects.
  auto* top = reinterpret_cast<uint64_t*>(static_cast<char*>(stack.bottom()) + stack.size());
  uint64_t* sp = top - 8;
  sp[7] = reinterpret_cast<uint64_t>(&kvc_emu_fiber_trampoline);
  sp[6] = 0;                                      // rbp
  sp[5] = 0;                                      // rbx
  sp[4] = reinterpret_cast<uint64_t>(arg);        // r12
  sp[3] = reinterpret_cast<uint64_t>(entry);      // r13
  sp[2] = 0;                                      // r14
  sp[1] = 0;                                      // r15
  sp[0] = 0x1F80ull | (0x037Full << 32);          // default MXCSR, default x87 control word
  ctx.sp = sp;
  ctx.stackBottom = stack.bottom();
  ctx.stackSize = stack.size();
  ctx.fakeStack = nullptr;
}

void switchFiber(FiberContext& from, FiberContext& to, bool fromIsFinished) {
#if defined(KVC_EMU_ASAN)
  __sanitizer_start_switch_fiber(fromIsFinished ? nullptr : &from.fakeStack, to.stackBottom, to.stackSize);
  kvc_emu_switch_context(&from.sp, to.sp);
  __sanitizer_finish_switch_fiber(from.fakeStack, nullptr, nullptr);
#else
  (void)fromIsFinished;
  kvc_emu_switch_context(&from.sp, to.sp);
#endif
}

void fiberStarted(FiberContext& from) {
#if defined(KVC_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &from.stackBottom, &from.stackSize);
#else
  (void)from;
#endif
}

}  // namespace kvc_emu
