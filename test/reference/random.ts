// Seeded inputs for the tests: a small PRNG (mulberry32), Gaussian samples, and the named
// structured inputs (arange, ones, seeded randn) that expose indexing bugs. Every test draws
// FRESH data: its seed mixes the test's name with a per-run seed, printed when the test fails
// so that the exact inputs can be replayed with KVC_TEST_SEED=<run seed>.
import { randomBytes } from 'node:crypto';
import { expect, onTestFailed } from 'vitest';

import { Mulberry32 } from '../../examples/shared/mulberry32';

/** The per-run component of every test seed (override with KVC_TEST_SEED to replay a run). */
export const RUN_SEED: number = process.env.KVC_TEST_SEED !== undefined
  ? Number.parseInt(process.env.KVC_TEST_SEED, 10) >>> 0
  : randomBytes(4).readUInt32LE(0);

/** FNV-1a over the UTF-16 code units of a string; stable across runs and platforms. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class Rng {
  private readonly bits: Mulberry32;
  private spare: number | null = null;

  constructor(readonly seed: number) {
    this.bits = new Mulberry32(seed);
  }

  /** Uniform 32-bit integer (mulberry32). */
  nextU32(): number {
    return this.bits.u32();
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Integer in [lo, hi] inclusive. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }

  /** Standard normal sample (Box–Muller, both outputs used). */
  randn(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

/** Float32Array of n N(0, scale²) samples; never all zeros. */
export function randn(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.randn() * scale;
  return a;
}

/** randn over `rng` as a plain function of (n, scale), for helpers that take no Rng. */
export function normalsFrom(rng: Rng): (n: number, scale?: number) => Float32Array {
  return (n, scale = 1) => randn(rng, n, scale);
}

/** Float32Array of n uniform samples in [lo, hi). */
export function uniform(rng: Rng, n: number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rng.uniform();
  return a;
}

/** start, start + step, ... (n values). With step 1 element i holds i: an index shows up as its value. */
export function arange(n: number, start = 0, step = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = start + i * step;
  return a;
}

export function ones(n: number, value = 1): Float32Array {
  return new Float32Array(n).fill(value);
}

/** Consecutive int32 positions start, start + 1, ... */
export function positionsFrom(start: number, n: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = start + i;
  return p;
}

/**
 * The generator of the running test: seed = hash(test name [+ salt]) ^ RUN_SEED, printed on failure.
 * Call inside an `it` body.
 */
export function testRng(salt = ''): Rng {
  const name = expect.getState().currentTestName ?? 'unnamed';
  const seed = (hashString(name + '\u0000' + salt) ^ RUN_SEED) >>> 0;
  onTestFailed(() => {
    console.error(`[kvcompact test inputs] "${name}"${salt ? ` (${salt})` : ''}: seed ${seed}; ` +
      `replay the run with KVC_TEST_SEED=${RUN_SEED}`);
  });
  return new Rng(seed);
}
