// free() and block reuse, and the consistency of stats(): blocksUsed / blocksFree / bytesUsed /
// tokens / bytesPerToken against the shapes appended, and KVCache.bytesPerToken(options).
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { testRng } from '../reference/random';
import { Shadow, type Shape, randomRows } from './helpers';

const shape: Shape = { layers: 2, kvHeads: 3, headDim: 32, keys: 'f16', values: 'f32' };
const rowBytes = 32 * 2 + 32 * 4 + 4 + 4; // key f16 + value f32 + beta + position

function probeBlockBytes(blockSize: number): number {
  const probe = new KVCache({ ...shape, blockSize });
  const b = probe.stats().blockBytes;
  probe.dispose();
  return b;
}

describe('free and stats', () => {
  it('stats fields follow the rows appended', () => {
    const rng = testRng();
    const blockSize = 16;
    const cache = new KVCache({ ...shape, blockSize, threads: 1 });
    const empty = cache.stats();
    expect(empty).toMatchObject({ sequences: 0, rows: 0, tokens: 0, blocksUsed: 0, bytesUsed: 0, bytesPerToken: 0 });
    // a block holds blockSize rows of key, value, beta and position, plus alignment padding
    expect(empty.blockBytes).toBeGreaterThanOrEqual(blockSize * rowBytes);
    expect(empty.blockBytes).toBeLessThanOrEqual(blockSize * rowBytes + 256);

    const seq = cache.createSequence();
    for (let l = 0; l < shape.layers; l++) {
      const r = randomRows(rng, shape, 40);
      seq.append(l, r.keys, r.values);
    }
    const s = cache.stats();
    const blocks = shape.layers * shape.kvHeads * Math.ceil(40 / blockSize);
    expect(s).toMatchObject({ sequences: 1, rows: 2 * 3 * 40, tokens: 40, blocksUsed: blocks });
    expect(s.bytesUsed).toBe(blocks * s.blockBytes);
    expect(s.bytesPerToken).toBeCloseTo(s.bytesUsed / 40, 9);

    // layers of different lengths: tokens = rows / (layers * kvHeads)
    const r = randomRows(rng, shape, 8);
    seq.append(1, r.keys, r.values);
    const t = cache.stats();
    expect(t.rows).toBe(3 * 40 + 3 * 48);
    expect(t.tokens).toBeCloseTo(t.rows / 6, 9);
    expect(t.bytesPerToken).toBeCloseTo(t.bytesUsed / t.tokens, 9);
    cache.dispose();
  });

  it('KVCache.bytesPerToken(options) = blockBytes · layers · kvHeads / blockSize, and stats agree on full blocks', () => {
    const rng = testRng();
    for (const blockSize of [16, 32]) {
      const opts = { ...shape, blockSize };
      const blockBytes = probeBlockBytes(blockSize);
      expect(KVCache.bytesPerToken(opts)).toBeCloseTo(blockBytes * shape.layers * shape.kvHeads / blockSize, 9);
      const cache = new KVCache({ ...opts, threads: 1 });
      const seq = cache.createSequence();
      for (let l = 0; l < shape.layers; l++) {
        const r = randomRows(rng, shape, 2 * blockSize);
        seq.append(l, r.keys, r.values);
      }
      expect(cache.stats().bytesPerToken).toBeCloseTo(KVCache.bytesPerToken(opts), 9);
      cache.dispose();
    }
    // default blockSize is 32
    expect(KVCache.bytesPerToken(shape)).toBeCloseTo(KVCache.bytesPerToken({ ...shape, blockSize: 32 }), 9);
  });

  it('free returns every block, restores blocksFree, and a new sequence reuses the blocks', () => {
    const rng = testRng();
    const blockSize = 16;
    const blockBytes = probeBlockBytes(blockSize);
    const capacity = 40;
    const cache = new KVCache({ ...shape, blockSize, maxBytes: capacity * blockBytes, threads: 1 });
    expect(cache.stats()).toMatchObject({ blocksUsed: 0, blocksFree: capacity, maxBytes: capacity * blockBytes });
    const a = cache.createSequence();
    const b = cache.createSequence();
    const rows = randomRows(rng, shape, 33); // 3 blocks per stream, 6 streams -> 18 blocks
    a.append(0, rows.keys, rows.values);
    a.append(1, rows.keys, rows.values);
    expect(cache.stats()).toMatchObject({ blocksUsed: 18, blocksFree: capacity - 18 });
    const bs = new Shadow(shape);
    const r = randomRows(rng, shape, 5);
    b.append(0, r.keys, r.values);
    bs.append(0, r.keys, r.values);
    expect(cache.stats()).toMatchObject({ sequences: 2, blocksUsed: 21, blocksFree: capacity - 21 });
    a.free();
    expect(a.freed).toBe(true);
    expect(cache.stats()).toMatchObject({ sequences: 1, blocksUsed: 3, blocksFree: capacity - 3 });
    a.free(); // idempotent
    bs.expectMatches(b, 'b after a was freed');
    b.free();
    expect(cache.stats()).toMatchObject({ sequences: 0, rows: 0, blocksUsed: 0, blocksFree: capacity, bytesUsed: 0 });
    // 36 blocks fit only if the 21 blocks freed above are reused (40 - 21 = 19 were never touched)
    const c = cache.createSequence();
    const cs = new Shadow(shape);
    const fit = randomRows(rng, shape, 6 * blockSize); // 6 blocks per stream × 6 streams = 36
    c.append(0, fit.keys, fit.values);
    cs.append(0, fit.keys, fit.values);
    c.append(1, fit.keys, fit.values);
    cs.append(1, fit.keys, fit.values);
    cs.expectMatches(c, 'new sequence in reused blocks');
    expect(cache.stats()).toMatchObject({ blocksUsed: 36, blocksFree: capacity - 36 });
    cache.dispose();
  });
});
