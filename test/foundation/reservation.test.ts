// The pool's address-space reservation is proportional to maxBytes, and without maxBytes it
// is min(physical memory, 8 GiB) (README "Memory"), so that many caches coexist: each
// reserves what it may use, not the machine's memory.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';

const GiB = 2 ** 30;
const shape = { layers: 2, kvHeads: 2, headDim: 32, keys: 'f16', values: 'f16', blockSize: 16, threads: 1 } as const;

// Virtual memory of this process (address space reserved), in bytes; Linux.
function vmSize(): number {
  const m = /VmSize:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('no VmSize in /proc/self/status');
  return Number(m[1]) * 1024;
}

describe('pool reservation', () => {
  it('defaults to min(physical memory, 8 GiB)', () => {
    const cache = new KVCache(shape);
    const { maxBytes, blockBytes } = cache.stats();
    const expected = Math.min(os.totalmem(), 8 * GiB);
    expect(maxBytes).toBeLessThanOrEqual(8 * GiB);
    // os.totalmem() and the native physical-page count may differ by a little kernel memory.
    expect(maxBytes).toBeGreaterThan(expected * 0.98 - blockBytes);
    cache.dispose();
  });

  it.runIf(process.platform === 'linux')('reserves address space in proportion to maxBytes', () => {
    const caches: KVCache[] = [];
    const before = vmSize();
    for (let i = 0; i < 100; i++) caches.push(new KVCache({ ...shape, maxBytes: 64 * GiB }));
    const perLarge = (vmSize() - before) / 100;
    for (const c of caches.splice(0)) c.dispose();
    const mid = vmSize();
    for (let i = 0; i < 100; i++) caches.push(new KVCache({ ...shape, maxBytes: 1 << 20 }));
    const perSmall = (vmSize() - mid) / 100;
    for (const c of caches.splice(0)) c.dispose();
    expect(perLarge).toBeGreaterThan(63 * GiB);
    expect(perLarge).toBeLessThan(65 * GiB);
    expect(perSmall).toBeLessThan(16 << 20);
    // Without maxBytes: at most 8 GiB each (it was the machine's memory before).
    const start = vmSize();
    for (let i = 0; i < 100; i++) caches.push(new KVCache(shape));
    const perDefault = (vmSize() - start) / 100;
    for (const c of caches.splice(0)) c.dispose();
    expect(perDefault).toBeLessThan(8 * GiB + (16 << 20));
  });

  it('2000 caches with a small maxBytes coexist without dispose', () => {
    const caches: KVCache[] = [];
    const rows = new Float32Array(shape.kvHeads * shape.headDim).fill(0.5);
    for (let i = 0; i < 2000; i++) {
      const cache = new KVCache({ ...shape, maxBytes: 1 << 20 });
      cache.createSequence().append(0, rows, rows);
      caches.push(cache);
    }
    expect(caches.every((c) => c.stats().rows === shape.kvHeads)).toBe(true); // one token in layer 0
    for (const c of caches) c.dispose(); // only to spare the rest of the suite
  }, 180_000); // 2000 native caches take ~55 s on a loaded 2-core machine
});
