// precision 'fast' meets rope and lowRank (docs/fast-precision.md, "With rope and lowRank"):
// there are no stored integer rows to score, so 'fast' computes exactly. The same cache without
// rope / lowRank gives a different result under 'fast' (the fast path is reachable with these
// shapes), so an equality here is not vacuous.
import { describe, expect, it } from 'vitest';
import { KVCache, type KVCacheOptions } from '../../lib/index';
import { randn, testRng } from '../reference/random';

const D = 64, KVH = 2, QH = 4, T = 200, TQ = 2;

function outputs(options: KVCacheOptions, salt: string, lowRank: boolean): { fast: Float32Array; exact: Float32Array } {
  const rng = testRng(salt);
  using cache = new KVCache(options);
  const seq = cache.createSequence();
  seq.append(0, randn(rng, T * KVH * D), randn(rng, T * KVH * D));
  if (lowRank) seq.fitBases();
  const q = randn(rng, TQ * QH * D);
  const fast = seq.attention(0, q, { precision: 'fast' }).slice();
  const exact = seq.attention(0, q, { precision: 'exact' }).slice();
  return { fast, exact };
}

const base = { layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys: 'int8', values: 'int8', groupSize: 32, blockSize: 32, threads: 1 } as const;

describe("precision 'fast' with rope and lowRank", () => {
  it('a plain int8 cache: fast differs from exact (the control)', () => {
    const r = outputs(base, 'a', false);
    expect(Buffer.from(r.fast.buffer).equals(Buffer.from(r.exact.buffer))).toBe(false);
  });

  it('rope: fast equals exact bit for bit, for the cache default and the per-call option', () => {
    const opts = { ...base, rope: { theta: 10000, dims: D, style: 'half' } } as const;
    const r = outputs(opts, 'a', false);
    expect(Buffer.from(r.fast.buffer).equals(Buffer.from(r.exact.buffer))).toBe(true);
    const d = outputs({ ...opts, precision: 'fast' }, 'a', false);
    expect(Buffer.from(d.fast.buffer).equals(Buffer.from(r.exact.buffer))).toBe(true);
  });

  it('lowRank: fast equals exact bit for bit', () => {
    const opts = { ...base, groupSize: 16, lowRank: { keys: 32, values: 32, calibrationRows: 0 } } as const;
    const r = outputs(opts, 'a', true);
    expect(Buffer.from(r.fast.buffer).equals(Buffer.from(r.exact.buffer))).toBe(true);
  });
});
