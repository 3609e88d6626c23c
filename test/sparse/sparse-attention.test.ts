// Dynamic sparse decode on the CPU (attention(..., { sparse }), keySummaries): the block bounds
// equal the float64 reference of the stored keys' summaries (so the SIMD kernel and the summary
// upkeep are both checked), the picked blocks follow the selection rule, and sparse attention
// equals exact attention over the rows of the picked blocks, with attention mass on those rows
// only. The summaries stay true through append in pieces, fork + copy-on-write, truncate,
// eviction, compaction (which adds beta) and import.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { type StreamRows, attentionReference } from '../reference/attention-reference';
import { expectClose, relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { outputTol } from '../foundation/attention-tolerance';
import { boundsReference, pickedRows, selectReference, type SparseRule } from './sparse-reference';

function streamRows(seq: Sequence, layer: number, h: number): Required<StreamRows> {
  const r = seq.read(layer, h);
  return { keys: r.keys, values: r.values, positions: r.positions, beta: r.beta };
}

/** Queries of kv head h, [tq * group][D]. */
function groupQueries(q: Float32Array, tq: number, queryHeads: number, group: number, D: number, h: number): Float32Array[] {
  const out: Float32Array[] = [];
  for (let t = 0; t < tq; t++) {
    for (let g = 0; g < group; g++) out.push(q.subarray((t * queryHeads + h * group + g) * D, (t * queryHeads + h * group + g + 1) * D));
  }
  return out;
}

/**
 * Every check of one layer: bounds against the reference (unrotated caches, where read() returns
 * the keys as stored), the bound is at least every logit of its block, the selection rule, and
 * sparse attention (with lse and attention mass) against exact attention over the picked rows.
 */
function checkLayer(seq: Sequence, layer: number, q: Float32Array, rule: SparseRule, label: string, exact = true): number[][] {
  const c = seq.cache.config;
  const D = c.headDim;
  const group = c.queryHeads / c.kvHeads;
  const tq = q.length / (c.queryHeads * D);
  const sel = seq.sparseSelection(layer, q, rule);
  const streams: StreamRows[] = [];
  const picks: number[][] = [];
  for (let h = 0; h < c.kvHeads; h++) {
    const s = streamRows(seq, layer, h);
    const T = s.positions.length;
    const qs = groupQueries(q, tq, c.queryHeads, group, D, h);
    const bounds = sel[h]!.bounds;
    expect(bounds.length, `${label}: bounds of head ${h}`).toBe(Math.ceil(T / c.blockSize));
    // Every logit of a block is at most its bound (up to float32 summation error).
    for (let b = 0; b < bounds.length; b++) {
      let maxLogit = -Infinity;
      let mag = 0;
      for (let r = b * c.blockSize; r < Math.min(T, (b + 1) * c.blockSize); r++) {
        for (const qq of qs) {
          let dot = 0;
          for (let d = 0; d < D; d++) {
            dot += qq[d]! * s.keys[r * D + d]!;
            mag += Math.abs(qq[d]! * s.keys[r * D + d]!);
          }
          maxLogit = Math.max(maxLogit, dot / Math.sqrt(D) + s.beta[r]!);
        }
      }
      expect(bounds[b]!, `${label}: head ${h} block ${b} bound >= its logits`).toBeGreaterThanOrEqual(maxLogit - 1e-5 * (1 + mag));
    }
    if (!c.rotateKeys) {
      const ref = boundsReference(s.keys, s.beta, T, D, c.blockSize, qs);
      for (let b = 0; b < bounds.length; b++) {
        const tol = 2e-6 * (1 + Math.abs(ref[b]!)) * Math.sqrt(D);
        // Not exact: a block cut by truncate while a fork shares it keeps the summary of all its
        // rows (still a bound of the rows left, never tighter than the reference).
        if (exact) expect(Math.abs(bounds[b]! - ref[b]!), `${label}: head ${h} block ${b} bound ${bounds[b]} vs reference ${ref[b]}`).toBeLessThanOrEqual(tol);
        else expect(bounds[b]! - ref[b]!, `${label}: head ${h} block ${b} bound ${bounds[b]} vs reference ${ref[b]}`).toBeGreaterThanOrEqual(-tol);
      }
    }
    const picked = Array.from(sel[h]!.blocks);
    expect(picked, `${label}: head ${h} selection rule`).toEqual(selectReference(bounds, T, c.blockSize, rule, tq));
    picks.push(picked);
    streams.push(pickedRows(s, D, c.blockSize, picked));
  }
  // Sparse attention = exact attention over the picked rows; mass only on them.
  seq.resetScores();
  const lse = new Float32Array(tq * c.queryHeads);
  const out = seq.attention(layer, q, { sparse: rule, lse, accumulateScores: true });
  const ref = attentionReference({ headDim: D, queryHeads: c.queryHeads, streams, queries: q });
  const T0 = streams[0]!.positions.length;
  expectClose(out, ref.out, outputTol(T0), `${label}: sparse output`);
  expectClose(lse, ref.lse, { abs: 2e-5 }, `${label}: lse`);
  for (let h = 0; h < c.kvHeads; h++) {
    const scores = seq.scores(layer, h);
    const inPicked = new Set<number>();
    for (const b of picks[h]!) for (let r = b * c.blockSize; r < (b + 1) * c.blockSize; r++) inPicked.add(r);
    let total = 0;
    for (let r = 0; r < scores.length; r++) {
      if (!inPicked.has(r)) expect(scores[r], `${label}: mass on unread row ${r}`).toBe(0);
      total += scores[r]!;
    }
    expect(total, `${label}: head ${h} mass of the read rows`).toBeCloseTo(tq * group, 4);
  }
  return picks;
}

const BASE: KVCacheOptions = { layers: 2, kvHeads: 2, headDim: 64, queryHeads: 8, blockSize: 16, keySummaries: true, threads: 2 };

describe('sparse decode: bounds, selection, exact attention over the picked blocks', () => {
  const cases: Array<{ keys: Storage; headDim: number; rotate?: boolean; blockSize?: number }> = [
    { keys: 'f16', headDim: 64 },      // AVX-512 bounds kernel (headDim % 16 == 0)
    { keys: 'f32', headDim: 24 },      // AVX2 (headDim % 8 == 0)
    { keys: 'bf16', headDim: 12 },     // scalar reference kernel
    { keys: 'int8', headDim: 64 },
    { keys: 'int4', headDim: 32, blockSize: 8 },
    { keys: 'int8', headDim: 64, rotate: true },
  ];
  for (const k of cases) {
    it(`${k.keys} keys, head_dim ${k.headDim}${k.rotate ? ', rotated' : ''}`, () => {
      const rng = testRng(`${k.keys}-${k.headDim}`);
      const cache = new KVCache({ ...BASE, keys: k.keys, headDim: k.headDim, groupSize: Math.min(32, k.headDim),
        rotate: k.rotate ?? false, blockSize: k.blockSize ?? 16 });
      const seq = cache.createSequence();
      const D = k.headDim;
      const T = 301;
      for (const layer of [0, 1]) seq.append(layer, randn(rng, T * 2 * D), randn(rng, T * 2 * D));
      const rule = { tokens: 64, sinks: 4, recent: 20 };
      const picks = checkLayer(seq, 1, randn(rng, 8 * D, 2), rule, 'decode');
      // A budget below the whole stream really drops blocks.
      expect(picks[0]!.length).toBeLessThan(Math.ceil(T / cache.config.blockSize));
      checkLayer(seq, 0, randn(rng, 3 * 8 * D, 2), rule, 'three query tokens (causal)');
      checkLayer(seq, 0, randn(rng, 8 * D), { tokens: 10_000, sinks: 4, recent: 64 }, 'budget above the stream: dense');
      cache.dispose();
    });
  }

  it('summaries stay true through append in pieces, fork + copy-on-write, truncate, eviction, compaction and import', async () => {
    const rng = testRng('upkeep');
    const D = 32;
    const cache = new KVCache({ ...BASE, headDim: D, keys: 'int8', values: 'f16', blockSize: 8 });
    const rule = { tokens: 40, sinks: 2, recent: 8 };
    const q = () => randn(rng, 8 * D, 2);
    const seq = cache.createSequence();
    for (const n of [3, 1, 9, 20, 1, 1, 30]) {
      seq.append(0, randn(rng, n * 2 * D), randn(rng, n * 2 * D));
      seq.append(1, randn(rng, n * 2 * D), randn(rng, n * 2 * D));
    }
    checkLayer(seq, 0, q(), rule, 'after appends in pieces');
    const child = seq.fork();
    child.append(0, randn(rng, 3 * 2 * D, 5), randn(rng, 3 * 2 * D)); // copy-on-write of the shared partial block
    checkLayer(child, 0, q(), rule, 'fork after its own append');
    checkLayer(seq, 0, q(), rule, 'parent after the fork appended');
    // The fork shares the block truncate cuts: that summary stays a (looser) bound.
    seq.truncate(50);
    checkLayer(seq, 0, q(), rule, 'after truncate, block shared', false);
    seq.append(0, randn(rng, 2 * D, 4), randn(rng, 2 * D));
    seq.append(1, randn(rng, 2 * D, 4), randn(rng, 2 * D));
    checkLayer(seq, 0, q(), rule, 'append after truncate', false);
    checkLayer(child, 0, q(), rule, 'fork after the parent truncated');
    child.free();
    // Unshared now: truncate recomputes the cut block's summary.
    seq.truncate(45);
    checkLayer(seq, 0, q(), rule, 'after truncate, block owned');
    checkLayer(seq, 1, q(), rule, 'after truncate, block owned, layer 1');
    seq.evict(EvictionPolicy.random(3), { ratio: 0.6 });
    checkLayer(seq, 0, q(), rule, 'after eviction');
    for (let i = 0; i < 16; i++) seq.attention(1, randn(rng, 8 * D, 2), { recordQueries: true });
    await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 4 } }).compact(seq, { layers: [1] });
    const beta = [0, 1].flatMap((h) => Array.from(seq.read(1, h).beta));
    expect(beta.some((b) => b !== 0), 'compaction fitted beta').toBe(true);
    checkLayer(seq, 1, q(), rule, 'after compaction (beta in the bounds)');
    const again = cache.importSequence(seq.export());
    checkLayer(again, 1, q(), rule, 'after import');
    checkLayer(again, 0, q(), rule, 'after import, layer 0');
    cache.dispose();
  });

  it('attentionBatch takes the sparse option per sequence', () => {
    const rng = testRng('batch');
    const D = 64;
    const cache = new KVCache({ ...BASE, headDim: D });
    const a = cache.createSequence();
    const b = cache.createSequence();
    a.append(0, randn(rng, 200 * 2 * D), randn(rng, 200 * 2 * D));
    b.append(0, randn(rng, 90 * 2 * D), randn(rng, 90 * 2 * D));
    const q = randn(rng, 2 * 8 * D, 2);
    const rule = { tokens: 48, sinks: 4, recent: 16 };
    const out = cache.attentionBatch(0, [a, b], q, { sparse: rule });
    const one = a.attention(0, q.subarray(0, 8 * D), { sparse: rule });
    const two = b.attention(0, q.subarray(8 * D), { sparse: rule });
    expect(relError(out.subarray(0, 8 * D), one)).toBeLessThan(1e-6);
    expect(relError(out.subarray(8 * D), two)).toBeLessThan(1e-6);
    // ... and differs from dense attention (the budget drops blocks).
    expect(relError(one, a.attention(0, q.subarray(0, 8 * D)))).toBeGreaterThan(1e-4);
    cache.dispose();
  });

  it('rejects sparse attention without key summaries and bad sparse options', () => {
    const cache = new KVCache({ ...BASE, keySummaries: false });
    const seq = cache.createSequence();
    const D = 64;
    seq.append(0, randn(testRng('e'), 40 * 2 * D), randn(testRng('f'), 40 * 2 * D));
    const q = new Float32Array(8 * D).fill(0.5);
    expect(() => seq.attention(0, q, { sparse: { tokens: 16 } })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    const good = new KVCache(BASE);
    const s2 = good.createSequence();
    s2.append(0, randn(testRng('e'), 40 * 2 * D), randn(testRng('f'), 40 * 2 * D));
    for (const bad of [{ tokens: 0 }, { tokens: 1.5 }, { tokens: 16, sinks: -1 }, { tokens: 16, window: 3 }, {}]) {
      expect(() => s2.attention(0, q, { sparse: bad as never }), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    expect(() => new KVCache({ ...BASE, keySummaries: 'yes' as never })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    // A summary entry (maxBeta + bf16 lo/hi: 16 + 4 × headDim bytes) per block, counted with it.
    expect(good.stats().blockBytes - cache.stats().blockBytes).toBe(16 + 4 * D);
    expect(KVCache.bytesPerToken(BASE)).toBeGreaterThan(KVCache.bytesPerToken({ ...BASE, keySummaries: false }));
    cache.dispose();
    good.dispose();
  });
});
