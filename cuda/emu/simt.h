// Kernel-facing SIMT built-ins of the emulator: thread/block indices, __syncthreads, dynamic
// shared memory and the warp intrinsics. Each call that synchronizes records its call site
// (GCC's __builtin_FILE/__builtin_LINE as default arguments) for the deadlock report.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <vector_types.h>  // uint3, dim3 from the CUDA toolkit (plain host structs)

// Per OS thread, rewritten by the scheduler before it resumes each fiber.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace kvc_emu {

enum class WarpOp : uint8_t { kSync, kShfl, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };

void syncThreads(const char* file, int line);
// Rendezvous of the lanes named in `mask`; returns this lane's result (raw bits).
uint64_t warpExchange(WarpOp op, unsigned mask, uint64_t value, int param, int width, const char* file, int line);
// Base of this block's dynamic shared memory (0xFF-filled at block start), or nullptr.
void* dynamicShared();
size_t dynamicSharedBytes();

template <class T>
uint64_t toBits(const T& v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "warp exchange of up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <class T>
T fromBits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

}  // namespace kvc_emu

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  kvc_emu::syncThreads(file, line);
}

inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  kvc_emu::warpExchange(kvc_emu::WarpOp::kSync, mask, 0, 0, 32, file, line);
}

template <class T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
  return kvc_emu::fromBits<T>(
      kvc_emu::warpExchange(kvc_emu::WarpOp::kShfl, mask, kvc_emu::toBits(var), srcLane, width, file, line));
}

template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  return kvc_emu::fromBits<T>(kvc_emu::warpExchange(kvc_emu::WarpOp::kShflUp, mask, kvc_emu::toBits(var),
                                                    static_cast<int>(delta), width, file, line));
}

template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                   int line = __builtin_LINE()) {
  return kvc_emu::fromBits<T>(kvc_emu::warpExchange(kvc_emu::WarpOp::kShflDown, mask, kvc_emu::toBits(var),
                                                    static_cast<int>(delta), width, file, line));
}

template <class T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
  return kvc_emu::fromBits<T>(
      kvc_emu::warpExchange(kvc_emu::WarpOp::kShflXor, mask, kvc_emu::toBits(var), laneMask, width, file, line));
}

inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return static_cast<unsigned>(
      kvc_emu::warpExchange(kvc_emu::WarpOp::kBallot, mask, predicate != 0, 0, 32, file, line));
}

inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<int>(kvc_emu::warpExchange(kvc_emu::WarpOp::kAny, mask, predicate != 0, 0, 32, file, line));
}

inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<int>(kvc_emu::warpExchange(kvc_emu::WarpOp::kAll, mask, predicate != 0, 0, 32, file, line));
}
