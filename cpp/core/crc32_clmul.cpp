// CRC-32 by folding with carry-less multiplication (the method of Intel's white paper "Fast
// CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction", 2009), reduced here
// without Barrett: the folded 128-bit remainder is finished by the table.
//
// Why it works. The CRC register after a message M is M(x)·x^32 mod P(x) (with the initial
// register XORed into M's first four bytes), so any 128-bit polynomial congruent to M mod P
// gives the same CRC. A 16-byte block A followed by D bits is A·x^D; splitting A into its
// high and low 64-bit halves, A·x^D = Ahi·x^(D+64) + Alo·x^D ≡ Ahi·(x^(D+64) mod P) +
// Alo·(x^D mod P): two 64×32-bit carry-less products that fit in 128 bits and are XORed onto
// the block D bits later. Four accumulators fold 64 bytes per step (D = 512), are merged
// (D = 128), the remaining 16-byte blocks are folded one by one, and the table finishes the
// last 16 bytes and the tail.
//
// Bit order. The CRC is reflected: the first byte's lowest bit is the highest power. Loaded
// little-endian, bit j of a 128-bit lane holds x^(127-j), so the low 64-bit half holds the
// high powers. A product of two 64-bit operands whose bit j holds x^(63-j) lands at bit m
// holding x^(126-m), one power short of the 128-bit convention: each constant is therefore
// x^(e-1) mod P for the wanted x^e, placed with x^i at bit 63-i. The constants are computed
// below from P itself, not tabulated.
#include "crc32_clmul.h"

#include "crc32.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KVC_CRC32_CLMUL 1
#include <immintrin.h>
#endif

namespace kvc {

#if KVC_CRC32_CLMUL

namespace {

// x^e mod P, P = x^32 + 0x04C11DB7 (bit i holds x^i), placed with x^i at bit 63 - i.
constexpr uint64_t reflectedPower(unsigned e) {
  uint64_t v = 1;  // x^0
  for (unsigned i = 0; i < e; ++i) {
    v <<= 1;
    if (v & (1ull << 32)) v ^= 0x104C11DB7ull;
  }
  uint64_t r = 0;
  for (unsigned i = 0; i < 32; ++i) {
    if (v & (1ull << i)) r |= 1ull << (63 - i);
  }
  return r;
}

// Folding a block forward by D bits: the low half (high powers) is multiplied by
// x^(D+64) mod P, the high half by x^D mod P; each stored as x^(e-1) (see above).
struct FoldConstants {
  uint64_t low, high;
};
constexpr FoldConstants foldBy(unsigned bits) { return {reflectedPower(bits + 63), reflectedPower(bits - 1)}; }
constexpr FoldConstants kFold2048 = foldBy(2048);
constexpr FoldConstants kFold512 = foldBy(512);
constexpr FoldConstants kFold384 = foldBy(384);
constexpr FoldConstants kFold256 = foldBy(256);
constexpr FoldConstants kFold128 = foldBy(128);

__attribute__((target("pclmul,sse2"))) inline __m128i fold(__m128i x, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

__attribute__((target("pclmul,sse2"))) inline __m128i load(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

__attribute__((target("pclmul,sse2"))) inline __m128i constants(FoldConstants k) {
  return _mm_set_epi64x(static_cast<long long>(k.high), static_cast<long long>(k.low));
}

// The same folding four blocks per instruction (AVX-512 VPCLMULQDQ): each 64-byte register
// holds four consecutive blocks, and every lane folds by the same distance.
__attribute__((target("avx512f,vpclmulqdq"))) inline __m512i fold4(__m512i x, __m512i k) {
  return _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11));
}

__attribute__((target("avx512f"))) inline __m512i constants4(FoldConstants k) {
  const auto lo = static_cast<long long>(k.low), hi = static_cast<long long>(k.high);
  return _mm512_set_epi64(hi, lo, hi, lo, hi, lo, hi, lo);
}

__attribute__((target("avx512f"))) inline __m512i load4(const uint8_t* p) { return _mm512_loadu_si512(p); }

}  // namespace

bool crc32PclmulAvailable() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse2");
}

bool crc32VpclmulAvailable() {
  __builtin_cpu_init();
  return crc32PclmulAvailable() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq");
}

__attribute__((target("pclmul,sse2"))) uint32_t crc32UpdatePclmul(uint32_t crc, const uint8_t* p, size_t n) {
  if (n < 64) return crc32UpdateTable(crc, p, n);
  const __m128i k512 = constants(kFold512);
  const __m128i k128 = constants(kFold128);
  // The initial register (after the inversion) XORed into the first four bytes.
  __m128i x0 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(static_cast<int>(~crc)));
  __m128i x1 = load(p + 16), x2 = load(p + 32), x3 = load(p + 48);
  p += 64;
  n -= 64;
  while (n >= 64) {
    x0 = _mm_xor_si128(fold(x0, k512), load(p));
    x1 = _mm_xor_si128(fold(x1, k512), load(p + 16));
    x2 = _mm_xor_si128(fold(x2, k512), load(p + 32));
    x3 = _mm_xor_si128(fold(x3, k512), load(p + 48));
    p += 64;
    n -= 64;
  }
  __m128i x = _mm_xor_si128(fold(x0, k128), x1);
  x = _mm_xor_si128(fold(x, k128), x2);
  x = _mm_xor_si128(fold(x, k128), x3);
  while (n >= 16) {
    x = _mm_xor_si128(fold(x, k128), load(p));
    p += 16;
    n -= 16;
  }
  alignas(16) uint8_t rest[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(rest), x);
  return ~crc32RawTable(crc32RawTable(0, rest, 16), p, n);
}

__attribute__((target("avx512f,vpclmulqdq,pclmul"))) uint32_t crc32UpdateVpclmul(uint32_t crc, const uint8_t* p, size_t n) {
  if (n < 256) return crc32UpdatePclmul(crc, p, n);
  const __m512i k2048 = constants4(kFold2048);
  const __m512i k512 = constants4(kFold512);
  const __m128i k128 = constants(kFold128);
  __m512i x0 = _mm512_xor_si512(load4(p), _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, static_cast<long long>(~crc)));
  __m512i x1 = load4(p + 64), x2 = load4(p + 128), x3 = load4(p + 192);
  p += 256;
  n -= 256;
  while (n >= 256) {
    x0 = _mm512_xor_si512(fold4(x0, k2048), load4(p));
    x1 = _mm512_xor_si512(fold4(x1, k2048), load4(p + 64));
    x2 = _mm512_xor_si512(fold4(x2, k2048), load4(p + 128));
    x3 = _mm512_xor_si512(fold4(x3, k2048), load4(p + 192));
    p += 256;
    n -= 256;
  }
  __m512i x = _mm512_xor_si512(fold4(x0, k512), x1);
  x = _mm512_xor_si512(fold4(x, k512), x2);
  x = _mm512_xor_si512(fold4(x, k512), x3);
  while (n >= 64) {
    x = _mm512_xor_si512(fold4(x, k512), load4(p));
    p += 64;
    n -= 64;
  }
  // The four lanes onto the last: lane i lies 128·(3 - i) bits before it.
  alignas(64) uint8_t lanes[64];
  _mm512_store_si512(lanes, x);
  __m128i y = _mm_xor_si128(fold(load(lanes), constants(kFold384)), fold(load(lanes + 16), constants(kFold256)));
  y = _mm_xor_si128(y, fold(load(lanes + 32), k128));
  y = _mm_xor_si128(y, load(lanes + 48));
  while (n >= 16) {
    y = _mm_xor_si128(fold(y, k128), load(p));
    p += 16;
    n -= 16;
  }
  alignas(16) uint8_t rest[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(rest), y);
  return ~crc32RawTable(crc32RawTable(0, rest, 16), p, n);
}


#else

bool crc32PclmulAvailable() { return false; }
bool crc32VpclmulAvailable() { return false; }
uint32_t crc32UpdatePclmul(uint32_t crc, const uint8_t* p, size_t n) { return crc32UpdateTable(crc, p, n); }
uint32_t crc32UpdateVpclmul(uint32_t crc, const uint8_t* p, size_t n) { return crc32UpdateTable(crc, p, n); }

#endif

}  // namespace kvc
