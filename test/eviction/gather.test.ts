// The gather behind eviction (Cache::keepRows): kept rows move bit-exactly in every storage
// format (read() of a kept row after eviction equals read() of that row before, bits and all;
// beta, positions and accumulated scores move with it), attention afterwards equals the
// float64 reference over the kept rows read back, and freed blocks are really reusable.
import { describe, expect, it } from 'vitest';
import { EvictionPolicy, KVCache, type Storage } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectBitExact, expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { outputTol } from '../foundation/attention-tolerance';
import { expectKVError } from '../foundation/helpers';
import { filled } from './helpers';

const FORMATS: Storage[] = ['f32', 'f16', 'bf16', 'int8', 'int4'];

function rowsAt(a: Float32Array, rows: number[], D: number): Float32Array {
  const out = new Float32Array(rows.length * D);
  rows.forEach((r, i) => out.set(a.subarray(r * D, (r + 1) * D), i * D));
  return out;
}

describe('gather after eviction', () => {
  for (const keys of FORMATS) {
    const values: Storage = FORMATS[(FORMATS.indexOf(keys) + 2) % FORMATS.length]!;
    for (const rotate of keys === 'int8' || keys === 'int4' ? [false, true] : [false]) {
      it(`keys ${keys} / values ${values}${rotate ? ', rotated' : ''}: rows move bit-exactly, attention = reference on kept rows`, () => {
        const rng = testRng();
        const D = 32;
        const T = 77;
        const { cache, seq } = filled(rng, {
          layers: 2, kvHeads: 2, headDim: D, queryHeads: 4, blockSize: 8, keys, values, groupSize: 16,
          rotate: rotate ? { keys: true, values: true } : false,
        }, T, { calls: 1, tq: 2 }, 3);
        const before = [0, 1].map((l) => [0, 1].map((h) => ({ rows: seq.read(l, h), scores: seq.scores(l, h) })));
        const blocksBefore = cache.stats().blocksUsed;
        const r = seq.evict(EvictionPolicy.random(rng.int(0, 1000)), { ratio: 0.4, perHead: rng.int(0, 1) ? 'adaptive' : 'uniform' });
        expect(r.rowsAfter).toBe(4 * Math.round(0.4 * T));
        expect(cache.stats().blocksUsed).toBe(blocksBefore - r.blocksFreed);
        expect(r.bytesFreed).toBe(r.blocksFreed * cache.stats().blockBytes);
        for (let l = 0; l < 2; l++) {
          for (let h = 0; h < 2; h++) {
            const b = before[l]![h]!;
            const a = seq.read(l, h);
            const kept = Array.from(a.positions); // positions are the original row indices
            expect(kept.every((p, i) => i === 0 || p > kept[i - 1]!), 'ascending').toBe(true);
            const where = `layer ${l} head ${h}`;
            expectBitExact(a.keys, rowsAt(b.rows.keys, kept, D), `${where}: keys`);
            expectBitExact(a.values, rowsAt(b.rows.values, kept, D), `${where}: values`);
            expectBitExact(a.beta, rowsAt(b.rows.beta, kept, 1), `${where}: beta`);
            expectBitExact(seq.scores(l, h), rowsAt(b.scores, kept, 1), `${where}: scores`);
          }
          // Attention over the kept rows (decode, and Tq = 3 causal by position after an append).
          for (const tq of [1, 3]) {
            if (tq === 3) seq.append(l, randn(rng, 3 * 2 * D), randn(rng, 3 * 2 * D));
            const queries = randn(rng, tq * 4 * D);
            const out = seq.attention(l, queries, { out: new Float32Array(queries.length).fill(NaN) });
            const streams = [0, 1].map((h) => seq.read(l, h));
            const ref = attentionReference({ headDim: D, queryHeads: 4, streams, queries });
            const n = streams[0]!.positions.length;
            expectClose(out, ref.out, { rel: rotate ? 2e-5 : outputTol(n).rel }, `layer ${l} Tq ${tq}: attention`);
          }
        }
        cache.dispose();
      });
    }
  }

  it('freed blocks go back to the pool and are reused without new memory', () => {
    const rng = testRng();
    const blockSize = 16;
    const options = { layers: 2, kvHeads: 2, headDim: 16, blockSize, threads: 1 };
    const perBlock = KVCache.bytesPerToken(options) * blockSize / 4; // one block of one stream
    // Room for 4 streams × 8 blocks = 32 blocks.
    const cache = new KVCache({ ...options, maxBytes: 32 * perBlock });
    const a = cache.createSequence();
    for (let l = 0; l < 2; l++) a.append(l, randn(rng, 128 * 2 * 16), randn(rng, 128 * 2 * 16));
    expect(cache.stats().blocksFree).toBe(0);
    const b = cache.createSequence();
    expectKVError(() => b.append(0, randn(rng, 2 * 16), randn(rng, 2 * 16)), 'OUT_OF_MEMORY');
    const committed = cache.stats().committedBytes;
    const r = a.evict(EvictionPolicy.slidingWindow({ window: 64 }));
    expect(r.blocksFreed).toBe(16);
    expect(r.bytesFreed).toBe(16 * perBlock);
    expect(cache.stats().blocksFree).toBe(16);
    for (let l = 0; l < 2; l++) b.append(l, randn(rng, 64 * 2 * 16), randn(rng, 64 * 2 * 16));
    expect(cache.stats().blocksFree).toBe(0);
    expect(cache.stats().committedBytes).toBe(committed);
    cache.dispose();
  });

  it('heads of one layer may end with very different lengths, and stats() shows only what is held', () => {
    const rng = testRng();
    const cache = new KVCache({ layers: 1, kvHeads: 2, headDim: 8, blockSize: 8, threads: 1 });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 256 * 2 * 8), randn(rng, 256 * 2 * 8));
    // Head 0's scores are concentrated on few rows, head 1's spread: adaptive gives head 1 more.
    const policy = EvictionPolicy.custom((v) => Float32Array.from({ length: v.length },
      (_, r) => (v.kvHead === 0 ? (r % 64 === 0 ? 100 : 0) : 1 + (r % 7))), { sinks: 0, recent: 0 });
    seq.evict(policy, { keep: 64, perHead: 'adaptive', safeguard: 0.1 });
    const [h0, h1] = Array.from(seq.lengths(0));
    expect(h0! + h1!).toBe(128);
    expect(h0).toBe(7); // ceil(0.1 × 64) guaranteed: 4 hot rows + 3 cold
    expect(cache.stats().blocksUsed).toBe(Math.ceil(h0! / 8) + Math.ceil(h1! / 8));
    cache.dispose();
  });
});
