// Scalar references for the plain storage formats (ARCHITECTURE §3): IEEE binary16 and
// bfloat16 with round-to-nearest-even, written from the bit layouts alone (no library code),
// so that the rows a cache stores can be predicted bit-exactly. A second, arithmetic
// implementation (float64 scaling, no bit tricks) exists only to cross-check the first.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Bits of the float32 nearest to x (x is first rounded to float32, as a Float32Array would). */
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0]!;
}

export function bitsToF32(u: number): number {
  u32[0] = u >>> 0;
  return f32[0]!;
}

/** float32 -> binary16 bits, round to nearest even; overflow -> ±Inf; NaN -> quiet NaN. */
export function f32ToF16Bits(x: number): number {
  const u = f32Bits(x);
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 127 + 15; // binary16 biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Result is subnormal (or rounds up to the smallest normal, which the carry encodes).
    if (e < -10) return sign; // below half the smallest subnormal 2^-24
    mant |= 0x800000;
    const shift = 14 - e; // 13 for the mantissa width, 1 - e for the denormalization
    const half = 2 ** (shift - 1);
    let r = Math.floor(mant / 2 ** shift);
    const rem = mant - r * 2 ** shift;
    if (rem > half || (rem === half && (r & 1) === 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++; // a carry may reach 0x7c00 = Inf
  return sign | r;
}

/** binary16 bits -> its exact value (every binary16 value is a float32 value). */
export function f16BitsToF32(h: number): number {
  const s = (h & 0x8000) !== 0 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m !== 0 ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** float32 -> bfloat16 bits, round to nearest even; NaN -> quiet NaN. */
export function f32ToBf16Bits(x: number): number {
  const u = f32Bits(x);
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  const lsb = (u >>> 16) & 1;
  return Math.floor((u + 0x7fff + lsb) / 65536) & 0xffff;
}

export function bf16BitsToF32(b: number): number {
  return bitsToF32((b & 0xffff) * 65536);
}

export function roundToF16(x: number): number {
  return f16BitsToF32(f32ToF16Bits(x));
}

export function roundToBf16(x: number): number {
  return bf16BitsToF32(f32ToBf16Bits(x));
}

// ---- arrays ---------------------------------------------------------------------------------

export function toF16Bits(a: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f32ToF16Bits(a[i]!);
  return out;
}

export function fromF16Bits(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) out[i] = f16BitsToF32(h[i]!);
  return out;
}

export type PlainStorage = 'f32' | 'f16' | 'bf16';

/** Largest finite binary16 and bfloat16 values: storage saturates there (README "Formats"). */
export const F16_MAX = 65504;
export const BF16_MAX = (2 - 2 ** -7) * 2 ** 127;

function clampTo(x: number, max: number): number {
  return x > max ? max : x < -max ? -max : x;
}

/**
 * The values read() must return for rows appended as `input` into `storage`:
 * f32 exact; f16 / bf16 rounded to nearest even, finite values beyond the format's range
 * saturated at its largest finite value. A Uint16Array input holds binary16 bits, whose
 * values are exact float32 values; they are then stored (and rounded) like float32 input.
 */
export function storedValues(storage: PlainStorage, input: Float32Array | Uint16Array): Float32Array {
  const x = input instanceof Uint16Array ? fromF16Bits(input) : input;
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    out[i] = storage === 'f32' ? x[i]! : storage === 'f16' ? roundToF16(clampTo(x[i]!, F16_MAX)) : roundToBf16(clampTo(x[i]!, BF16_MAX));
  }
  return out;
}

// ---- independent arithmetic implementation (cross-check only) -------------------------------

/** Round a finite float32 value to a binary format with `mantBits` fraction bits by float64 scaling. */
function roundArith(x: number, mantBits: number, minExp: number, maxFinite: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  e = Math.max(e, minExp);
  const ulp = 2 ** (e - mantBits);
  const q = a / ulp; // exact: a has at most 24 significant bits and ulp is a power of two
  let r = Math.floor(q);
  const frac = q - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  const v = r * ulp;
  return sign * (v > maxFinite ? Infinity : v);
}

export function roundToF16Arith(x: number): number {
  return roundArith(Math.fround(x), 10, -14, 65504);
}

export function roundToBf16Arith(x: number): number {
  return roundArith(Math.fround(x), 7, -126, (2 - 2 ** -7) * 2 ** 127);
}
