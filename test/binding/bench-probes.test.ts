// The probes the benchmarks set their floors with: readPass must read every byte (its
// checksum is the XOR of the buffer's 64-bit words), readFloor must measure a real rate over
// pool-like memory, and both reject bad arguments with a KVCacheError.
import { describe, expect, it } from 'vitest';
import { native } from '../../lib/native/binding';
import { testRng } from '../reference/random';
import { expectKVError } from '../foundation/helpers';

/* eslint-disable @typescript-eslint/no-explicit-any */
const bad = (x: unknown) => x as any;

describe('bench probes', () => {
  it('readPass returns the low 32 bits of the XOR of every 64-bit word, any length and thread count', () => {
    const rng = testRng('readPass');
    for (const bytes of [8, 512, 4096 + 24, 3 * 512 * 1024 + 72]) {
      const buffer = new Uint8Array(bytes);
      for (let i = 0; i < bytes; i++) buffer[i] = rng.nextU32() & 0xff;
      const words = new BigUint64Array(buffer.buffer, 0, bytes / 8);
      let x = 0n;
      for (const w of words) x ^= w;
      const expected = Number(x & 0xffffffffn);
      for (const threads of [1, 2, 3]) expect(native().readPass(buffer, threads), `${bytes} bytes, ${threads} threads`).toBe(expected);
    }
  });

  it('readFloor measures a positive rate and rejects bad arguments', () => {
    const rate = native().readFloor(64, 1, 2);
    expect(Number.isFinite(rate)).toBe(true);
    expect(rate).toBeGreaterThan(1e8);  // 100 MB/s: any machine that runs these tests reads faster
    for (const args of [[0, 1, 1], [64, 0, 1], [64, 1, 0], ['64', 1, 1], [1.5, 1, 1], [-1, 1, 1]]) {
      expectKVError(() => native().readFloor(bad(args[0]), bad(args[1]), bad(args[2])), 'INVALID_ARGUMENT', JSON.stringify(args));
    }
    // 4 PiB of address space cannot be reserved: an error, not a crash.
    expectKVError(() => native().readFloor(2 ** 32 - 1, 1, 1), 'OUT_OF_MEMORY', '4 PiB');
  });
});
