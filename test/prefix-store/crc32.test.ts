// The export format's CRC-32 in native code: every implementation this CPU can run (the
// carry-less-multiply foldings and the portable table) against a bit-at-a-time scalar
// reference on fresh random bytes of every length 0..4096 at unaligned starts, continuing
// from random CRCs; long inputs split anywhere; and the gathering copy PrefixStore joins
// chunks with.
import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';

import '../../lib/index';
import { native } from '../../lib/native/binding';
import { Crc32Combiner } from '../../lib/prefix-store/crc32-combine';
import { testRng } from '../reference/random';
import { expectKVError } from '../foundation/helpers';

/** CRC-32 one bit at a time: reflected polynomial 0xEDB88320, initial and final inversion. */
function referenceCrc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    c ^= bytes[i]!;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

type Implementation = 'table' | 'pclmul' | 'vpclmul';

/** The implementations this CPU runs (the table always; the foldings where the instructions exist). */
function available(): Implementation[] {
  const out: Implementation[] = ['table'];
  for (const name of ['pclmul', 'vpclmul'] as const) {
    try {
      native().crc32(new Uint8Array(1), 0, name);
      out.push(name);
    } catch (e) {
      expect((e as { code?: string }).code).toBe('UNSUPPORTED');
    }
  }
  return out;
}

function randomBytes(rng: ReturnType<typeof testRng>, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(0, 255);
  return out;
}

describe('native CRC-32', () => {
  it('the process uses a folding where the CPU has one', () => {
    const impls = available();
    const chosen = native().crc32Implementation();
    expect(['table', 'pclmul', 'vpclmul']).toContain(chosen);
    if (process.env['KVCOMPACT_SIMD'] !== 'portable' && impls.includes('pclmul')) expect(chosen).not.toBe('table');
    // On an x86-64 CPU with PCLMULQDQ (every one since 2010) the folding must be built in.
    if (process.arch === 'x64') expect(impls).toContain('pclmul');
  });

  it('every implementation equals the scalar reference for every length 0..4096 at unaligned starts', () => {
    const rng = testRng();
    const pool = randomBytes(rng, 4096 + 64);
    const impls = [...available(), undefined];
    let checked = 0;
    for (let n = 0; n <= 4096; n++) {
      const start = rng.int(0, 63); // every alignment, and starts that put the last bytes anywhere
      const bytes = pool.subarray(start, start + n);
      const init = n % 3 === 0 ? 0 : rng.nextU32();
      const want = referenceCrc32(bytes, init);
      for (const impl of impls) {
        const got = native().crc32(bytes, init, impl);
        if (got !== want) expect(got, `${impl ?? 'chosen'}: length ${n}, start ${start}, crc ${init}`).toBe(want);
        checked++;
      }
    }
    expect(checked).toBe(4097 * impls.length);
  });

  it('long inputs: equal to zlib, and to the CRC continued across any split', () => {
    const rng = testRng();
    const bytes = randomBytes(rng, (3 << 20) + 77);
    const want = zlibCrc32(bytes) >>> 0;
    for (const impl of [...available(), undefined]) {
      expect(native().crc32(bytes, 0, impl), `${impl ?? 'chosen'} on ${bytes.length} bytes`).toBe(want);
      for (let t = 0; t < 4; t++) {
        const cut = rng.int(0, bytes.length);
        const first = native().crc32(bytes.subarray(0, cut), 0, impl);
        expect(native().crc32(bytes.subarray(cut), first, impl), `${impl ?? 'chosen'} split at ${cut}`).toBe(want);
      }
    }
    // A single flipped bit anywhere changes it.
    const flipped = Uint8Array.from(bytes);
    flipped[rng.int(0, bytes.length - 1)]! ^= 1 << rng.int(0, 7);
    expect(native().crc32(flipped, 0)).not.toBe(want);
  });

  it('rejects what is not a Uint8Array or an unknown implementation', () => {
    expectKVError(() => native().crc32(new Float32Array(4) as unknown as Uint8Array, 0), 'INVALID_ARGUMENT', 'a Float32Array');
    expectKVError(() => native().crc32(new Uint8Array(4), -1), 'INVALID_ARGUMENT', 'a negative crc');
    expectKVError(() => native().crc32(new Uint8Array(4), 0, 'crc32c' as 'table'), 'INVALID_ARGUMENT', 'an unknown implementation');
  });
});

describe('gatherCrc32', () => {
  it('copies pieces of several sources in order and returns the CRC of what it wrote', () => {
    const rng = testRng();
    const sources = Array.from({ length: 5 }, (_, i) => randomBytes(rng, 1000 + 997 * i));
    for (let t = 0; t < 20; t++) {
      const plan: number[] = [];
      const expected: Uint8Array[] = [];
      for (let p = rng.int(0, 40); p > 0; p--) {
        const s = rng.int(0, sources.length - 1);
        const offset = rng.int(0, sources[s]!.length);
        const length = rng.int(0, sources[s]!.length - offset);
        plan.push(s, offset, length);
        expected.push(sources[s]!.subarray(offset, offset + length));
      }
      const want = Buffer.concat(expected);
      const out = new Uint8Array(want.length + 3).fill(0xa5);
      const crc = native().gatherCrc32(sources, Float64Array.from(plan), out);
      expect(Buffer.from(out.subarray(0, want.length)).equals(want)).toBe(true);
      expect(Array.from(out.subarray(want.length))).toEqual([0xa5, 0xa5, 0xa5]);
      expect(crc).toBe(referenceCrc32(want));
    }
  });

  it('rejects pieces outside their source or the output, writing nothing', () => {
    const src = Uint8Array.from({ length: 64 }, (_, i) => i);
    const out = new Uint8Array(32).fill(7);
    const bad: [string, number[], Uint8Array][] = [
      ['an unknown source', [1, 0, 4], out],
      ['past the end of its source', [0, 0, 4, 0, 60, 8], out],
      ['past the end of the output', [0, 0, 20, 0, 20, 20], out],
      ['a fractional offset', [0, 0.5, 4], out],
      ['a negative length', [0, 4, -1], out],
      ['not triples', [0, 0], out],
    ];
    for (const [what, plan, o] of bad) {
      expectKVError(() => native().gatherCrc32([src], Float64Array.from(plan), o), 'INVALID_ARGUMENT', what);
      expect(o.every((b) => b === 7), `${what}: output untouched`).toBe(true);
    }
  });
});

describe('Crc32Combiner (the join checksums pieces as they arrive)', () => {
  it('the CRCs of consecutive pieces combine into the CRC of their concatenation', () => {
    const rng = testRng();
    for (let t = 0; t < 60; t++) {
      // Piece lengths from 0 to 100,000, the same length repeated (its shift is cached) and not.
      const lengths = Array.from({ length: rng.int(1, 12) }, () => (rng.int(0, 3) === 0 ? 4096 : rng.int(0, 100_000)));
      const pieces = lengths.map((n) => Uint8Array.from({ length: n }, () => rng.int(0, 255)));
      const combined = new Crc32Combiner();
      for (const p of pieces) combined.append(referenceCrc32(p), p.length);
      const whole = Buffer.concat(pieces);
      expect(combined.crc, `pieces ${lengths.join(',')}`).toBe(zlibCrc32(whole));
    }
  });
});
