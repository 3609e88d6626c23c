// Low-rank storage of pre-RoPE keys (lowRank + rope) and separate key / value ranks, including
// values kept unprojected in the cache's value format. Judged against a float64 reference that
// applies RoPE itself to the rows as stored (seq.read: lifted coefficients, still pre-RoPE)
// and runs plain causal GQA attention, on fresh random data: calibrating and fitted streams,
// gapped and large positions, both pair styles, prefill and decode, f16 / int8 / int4
// coefficients, positions re-indexed by rank after eviction; and against an independent path
// (a full-rank rope cache) where the stored rows are exact.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { roundToF16 } from '../reference/formats-reference';
import { errorCode } from '../support/error-code';
import { gappedPositions, ropeF64, type RopeSpec } from '../reference/rope-reference';
import { orthonormal } from './lowrank-reference';
import { AS_STORED, reference, referenceWithLse, STORED } from './rope-attention-reference';

const CASES = [
  { name: 'interleaved, D 32, GQA 2, keys rank 16 int8, values rank 24 int8', D: 32, KVH: 2, QH: 4, keyRank: 16, valueRank: 24,
    keys: 'int8', values: 'int8', rope: { theta: 10000, dims: 32, style: 'interleaved' }, start: 3 },
  { name: 'half, D 64, GQA 3, keys rank 32 f16, values unprojected int4, positions around 70,000', D: 64, KVH: 1, QH: 3, keyRank: 32,
    valueRank: 64, keys: 'f16', values: 'int4', rope: { theta: 500000, dims: 64, style: 'half' }, start: 70000 },
  { name: 'interleaved partial dims 16 of 32, keys rank 8 int4, values rank 8 int4, positions around 2^30', D: 32, KVH: 2, QH: 2, keyRank: 8,
    valueRank: 8, keys: 'int4', values: 'int4', rope: { theta: 10000, dims: 16, style: 'interleaved' }, start: 2 ** 30 + 12345 },
] as const;

describe('lowRank + rope: attention over lifted pre-RoPE keys against a float64 reference', () => {
  for (const c of CASES) {
    it(`${c.name}: calibrating and fitted streams, prefill (causal) and decode`, () => {
      const rng = testRng();
      const calibrationRows = 24;
      using cache = new KVCache({
        layers: 2, kvHeads: c.KVH, headDim: c.D, queryHeads: c.QH, keys: c.keys, values: c.values, blockSize: 16, groupSize: 8,
        rope: c.rope, lowRank: { keys: c.keyRank, values: c.valueRank, calibrationRows }, threads: 2,
      });
      const seq = cache.createSequence();
      // layer 0 stays below the calibration point (full-precision rows), layer 1 crosses it
      for (const [layer, T] of [[0, 17], [1, 61 + rng.int(0, 20)]] as const) {
        const positions = gappedPositions(rng, c.start, T);
        seq.append(layer, randn(rng, T * c.KVH * c.D), randn(rng, T * c.KVH * c.D), { positions });
        expect(seq.bases(layer, 0) === null).toBe(layer === 0);
        for (const tq of [5, 1]) {
          const queries = randn(rng, tq * c.QH * c.D);
          const lse = new Float32Array(tq * c.QH);
          const out = seq.attention(layer, queries, { lse });
          const want = referenceWithLse(seq, layer, c.KVH, c.D, c.QH, c.rope, queries, STORED, AS_STORED);
          expectClose(out, want.out, { rel: 2e-5, abs: 2e-5 }, `${c.name}, layer ${layer}, tq ${tq}`);
          expectClose(lse, want.lse, { rel: 2e-5, abs: 2e-5 }, `${c.name}, layer ${layer}, tq ${tq}, lse`);
        }
      }
      if (c.valueRank === c.D) expect(seq.bases(1, 0)!.values.length).toBe(0);
      else expect(seq.bases(1, 0)!.values.length).toBe(c.D * c.valueRank);
    });
  }

  it('exact rows (f32, full-rank key basis, unprojected f32 values): equals a rope cache without lowRank', () => {
    const rng = testRng();
    const D = 32, KVH = 2, QH = 4, T = 70;
    const opts = { layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys: 'f32', values: 'f32', groupSize: 8, rope: { theta: 10000 }, threads: 1 } as const;
    using lowRank = new KVCache({ ...opts, lowRank: { keys: D, values: D, calibrationRows: 20 } });
    using plain = new KVCache(opts);
    const a = lowRank.createSequence(), b = plain.createSequence();
    const k = randn(rng, T * KVH * D), v = randn(rng, T * KVH * D);
    a.append(0, k, v);
    b.append(0, k, v);
    // values unprojected: read back bit-exactly; keys through a full orthonormal basis
    expect(a.read(0, 1).values).toEqual(b.read(0, 1).values);
    for (const tq of [6, 1]) {
      const q = randn(rng, tq * QH * D);
      expectClose(a.attention(0, q), b.attention(0, q), { rel: 1e-5, abs: 1e-5 }, `tq ${tq}`);
    }
  });

  it('pre-RoPE keys of rank r: bases fitted on them lose nothing (the post-RoPE rows are not of rank r)', () => {
    const rng = testRng();
    const D = 32, r = 8, T = 200, calibrationRows = 64;
    // keys x = U z in a fixed rank-r subspace; RoPE at positions 0..T-1 spreads them over all D
    const U = orthonormal(rng, D, r);
    const z = randn(rng, T * r);
    const keys = new Float32Array(T * D);
    for (let t = 0; t < T; t++) for (let d = 0; d < D; d++) {
      let s = 0;
      for (let j = 0; j < r; j++) s += U[d * r + j]! * z[t * r + j]!;
      keys[t * D + d] = s;
    }
    const values = randn(rng, T * D);
    const opts = { layers: 1, kvHeads: 1, headDim: D, queryHeads: 2, keys: 'f32', values: 'f32', groupSize: 8, rope: { theta: 10000 }, threads: 1 } as const;
    using pre = new KVCache({ ...opts, lowRank: { keys: r, values: D, calibrationRows } });
    using exact = new KVCache(opts);
    const a = pre.createSequence(), b = exact.createSequence();
    a.append(0, keys, values);
    b.append(0, keys, values);
    const q = randn(rng, 4 * 2 * D);
    expectClose(a.attention(0, q), b.attention(0, q), { rel: 1e-4, abs: 1e-5 }, 'rank-r pre-RoPE keys');
    // the same keys after RoPE need far more than r dimensions: a post-RoPE rank-r cache is off
    const post = new Float32Array(T * D);
    for (let t = 0; t < T; t++) post.set(ropeF64(keys, t * D, D, { theta: 10000, dims: D, style: 'interleaved' }, t), t * D);
    using postCache = new KVCache({ ...opts, rope: undefined, lowRank: { keys: r, values: D, calibrationRows } });
    using postExact = new KVCache({ ...opts, rope: undefined });
    const c = postCache.createSequence(), e = postExact.createSequence();
    c.append(0, post, values);
    e.append(0, post, values);
    const qp = new Float32Array(q.length);
    for (let i = 0; i < q.length / D; i++) qp.set(ropeF64(q, i * D, D, { theta: 10000, dims: D, style: 'interleaved' }, T - 4 + Math.floor(i / 2)), i * D);
    let worst = 0;
    const got = c.attention(0, qp), want = e.attention(0, qp);
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    expect(worst).toBeGreaterThan(1e-2);
  });

  it('positions re-indexed by rank after eviction; H2O scores accumulate over lifted rows', () => {
    const rng = testRng();
    const D = 32, KVH = 2, QH = 4, T = 90;
    const r: RopeSpec = { theta: 10000, dims: 32, style: 'interleaved' };
    using cache = new KVCache({ layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys: 'int8', values: 'int8', groupSize: 8,
      rope: r, lowRank: { keys: 16, values: 32, calibrationRows: 32 }, threads: 2 });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, T * KVH * D), randn(rng, T * KVH * D), { positions: gappedPositions(rng, 10, T) });
    seq.attention(0, randn(rng, 8 * QH * D), { accumulateScores: true });
    seq.evict(EvictionPolicy.h2o({ sinks: 2, recent: 8 }), { ratio: 0.5 });
    expect(seq.length(0, 0)).toBeLessThan(T);
    for (const tq of [3, 1]) {
      const q = randn(rng, tq * QH * D);
      const byRank = seq.attention(0, q, { positions: 'rank' });
      const n = seq.length(0, 0);
      expectClose(byRank, reference(seq, 0, KVH, D, QH, r, q, (t) => n - tq + t, (row) => row), { rel: 2e-5, abs: 2e-5 }, `rank, tq ${tq}`);
      expectClose(seq.attention(0, q), reference(seq, 0, KVH, D, QH, r, q, STORED, AS_STORED), { rel: 2e-5, abs: 2e-5 }, `stored, tq ${tq}`);
    }
  });
});

describe('lowRank: separate key and value settings', () => {
  it('bytesPerToken and stats count each rank, and no value basis for unprojected values', () => {
    const base = { layers: 2, kvHeads: 2, headDim: 64, keys: 'int8', values: 'int8', groupSize: 32 } as const;
    const full = KVCache.bytesPerToken({ ...base });
    const split = KVCache.bytesPerToken({ ...base, lowRank: { keys: 32, values: 64 } });
    const half = KVCache.bytesPerToken({ ...base, headDim: 32 });
    // 64-wide value rows and 32-wide key rows: halfway between 32-wide and 64-wide rows
    expect(KVCache.bytesPerToken({ ...base, lowRank: { keys: 32, values: 32 } })).toBe(half);
    expect(split - half).toBe((full - half) / 2);
    expect(KVCache.bytesPerToken({ ...base, lowRank: { keys: 32, values: 64 } }, 512) - split).toBe((2 * 2 * 4 * 64 * 32) / 512);
    expect(KVCache.bytesPerToken({ ...base, lowRank: { keys: 32, values: 32 } }, 512) - KVCache.bytesPerToken({ ...base, lowRank: { keys: 32, values: 32 } }))
      .toBe((2 * 2 * 4 * 64 * 64) / 512);
    const rng = testRng();
    using cache = new KVCache({ ...base, queryHeads: 2, lowRank: { keys: 32, values: 64, calibrationRows: 8 } });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 20 * 2 * 64), randn(rng, 20 * 2 * 64));
    seq.append(1, randn(rng, 20 * 2 * 64), randn(rng, 20 * 2 * 64));
    expect(cache.stats().lowRankBytes).toBe(2 * 2 * 4 * 64 * 32);
  });

  it('unprojected values read back as the plain cache stores them (bit-exact, int8)', () => {
    const rng = testRng();
    const opts = { layers: 1, kvHeads: 2, headDim: 32, keys: 'int8', values: 'int8', groupSize: 16, threads: 1 } as const;
    using a = new KVCache({ ...opts, lowRank: { keys: 16, values: 32, calibrationRows: 10 } });
    using b = new KVCache(opts);
    const sa = a.createSequence(), sb = b.createSequence();
    // binary16 inputs: the calibration rows are held as binary16 before they are stored
    const k = randn(rng, 40 * 2 * 32), v = randn(rng, 40 * 2 * 32).map(roundToF16);
    sa.append(0, k, v);
    sb.append(0, k, v);
    expect(sa.read(0, 1).values).toEqual(sb.read(0, 1).values);
  });

  it('post-RoPE keys with unequal ranks (no rope): attention exact for what is stored', () => {
    const rng = testRng();
    const D = 32, KVH = 2, QH = 4;
    using cache = new KVCache({ layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys: 'f16', values: 'int4', groupSize: 8,
      lowRank: { keys: 24, values: 8, calibrationRows: 16 }, threads: 1 });
    const seq = cache.createSequence();
    const T = 50;
    seq.append(0, randn(rng, T * KVH * D), randn(rng, T * KVH * D));
    for (const tq of [4, 1]) {
      const q = randn(rng, tq * QH * D);
      const streams = [0, 1].map((h) => seq.read(0, h));
      const want = attentionReference({ headDim: D, queryHeads: QH, streams, queries: q }).out;
      expectClose(seq.attention(0, q), want, { rel: 2e-5, abs: 2e-5 }, `tq ${tq}`);
    }
  });

  it('refusals: bad ranks INVALID_ARGUMENT (device cuda with rope: test/cuda/lowrank-rope-parity.test.ts)', async () => {
    const base = { layers: 1, kvHeads: 1, headDim: 32, groupSize: 8 } as const;
    const code = errorCode;
    expect(code(() => new KVCache({ ...base, lowRank: { keys: 8, values: 12 } }))).toBe('INVALID_ARGUMENT');  // 8 does not divide 12
    expect(code(() => new KVCache({ ...base, lowRank: { keys: 8, values: 34 } }))).toBe('INVALID_ARGUMENT');
    const rng = testRng();
    using cache = new KVCache({ ...base, lowRank: { keys: 8, values: 16, calibrationRows: 4 } });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 12 * 32), randn(rng, 12 * 32));
    seq.attention(0, randn(rng, 32), { recordQueries: true });
    // export, import and compaction of such caches: lowrank-ranks.test.ts
    expect(cache.importSequence(seq.export()).lengths(0)).toEqual(seq.lengths(0));
    await expect(new Compactor({ ratio: 0.5 }).compact(seq)).resolves.toBeDefined();
  });

  it('lowRank + rope with equal ranks exports and imports (bases, rope fields, rows) and attends the same', () => {
    const rng = testRng();
    const opts = { layers: 1, kvHeads: 2, headDim: 32, queryHeads: 2, keys: 'int8', values: 'int8', groupSize: 16, rope: { theta: 10000 },
      lowRank: { keys: 16, values: 16, calibrationRows: 8 }, threads: 1 } as const;
    using cache = new KVCache(opts);
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 30 * 2 * 32), randn(rng, 30 * 2 * 32));
    const again = cache.importSequence(seq.export());
    const q = randn(rng, 2 * 32);
    expect(again.attention(0, q)).toEqual(seq.attention(0, q));
  });
});
