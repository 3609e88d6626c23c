// Device math and atomics of the emulator. The fast-math intrinsics are exact here and
// approximate on a GPU (tests must allow the GPU's error). Atomics use real atomic
// builtins so that the thread-per-CUDA-thread mode stays race-free under ThreadSanitizer.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// Uncontracted round-to-nearest f32 product and sum (a kernel spells them to keep nvcc from
// fusing them into an fma). The emulator builds with -ffp-contract=off, so the plain
// operators are exactly these roundings here.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// Round to nearest even, as the GPU's _rn conversions (the default FP environment rounds so).
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline int __float_as_int(float f) { return static_cast<int>(__float_as_uint(f)); }
inline float __int_as_float(int i) { return __uint_as_float(static_cast<unsigned>(i)); }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// Integer atomics return the old value, as on the device.
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline int atomicCAS(int* p, int expected, int desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
inline unsigned atomicCAS(unsigned* p, unsigned expected, unsigned desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}

template <class T>
inline T kvcEmuAtomicUpdate(T* p, T v, T (*f)(T, T)) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(p, &old, f(old, v), false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

inline int atomicMax(int* p, int v) {
  return kvcEmuAtomicUpdate<int>(p, v, [](int a, int b) { return a > b ? a : b; });
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
  return kvcEmuAtomicUpdate<unsigned>(p, v, [](unsigned a, unsigned b) { return a > b ? a : b; });
}
inline int atomicMin(int* p, int v) {
  return kvcEmuAtomicUpdate<int>(p, v, [](int a, int b) { return a < b ? a : b; });
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
  return kvcEmuAtomicUpdate<unsigned>(p, v, [](unsigned a, unsigned b) { return a < b ? a : b; });
}

// Floating-point atomics through a compare-and-swap on the bit pattern.
inline float atomicAdd(float* p, float v) {
  auto* u = reinterpret_cast<unsigned*>(p);
  unsigned old = __atomic_load_n(u, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(u, &old, __float_as_uint(__uint_as_float(old) + v), false, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
  return __uint_as_float(old);
}
inline double atomicAdd(double* p, double v) {
  auto* u = reinterpret_cast<unsigned long long*>(p);
  unsigned long long old = __atomic_load_n(u, __ATOMIC_RELAXED);
  for (;;) {
    double d;
    std::memcpy(&d, &old, 8);
    d += v;
    unsigned long long next;
    std::memcpy(&next, &d, 8);
    if (__atomic_compare_exchange_n(u, &old, next, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
  }
  double r;
  std::memcpy(&r, &old, 8);
  return r;
}
