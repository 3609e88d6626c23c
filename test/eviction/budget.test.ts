// Budgets: { keep } / { ratio } / per-layer ratios, pyramid schedules and Ada-KV adaptive
// per-head budgets, against the reference allocation (reference.ts) with exact scores given
// through custom policies; the totals, the safeguard and the freed memory are checked too.
import { describe, expect, it } from 'vitest';
import { EvictionPolicy, KVCache, type EvictionBudget } from '../../lib/index';
import { randn, testRng, type Rng } from '../reference/random';
import { allLengths, keptRows } from './helpers';
import { adaptiveRows, apportion, selectRows, shares } from './reference';

/**
 * A sequence whose streams have the given lengths (layer-major; every layer's lengths must sum
 * to the same kvHeads × k), rows at positions 0..n-1. Made with an adaptive eviction: row r of
 * a stream scores 1 when r < its target length, else 0, safeguard 0, so the layer's total
 * (kvHeads × k) goes exactly to the rows scoring 1.
 */
function withLengths(rng: Rng, layers: number, kvHeads: number, lengths: number[]) {
  const cache = new KVCache({ layers, kvHeads, headDim: 4, blockSize: 8, threads: 1 });
  const seq = cache.createSequence();
  const longest = Math.max(...lengths);
  for (let l = 0; l < layers; l++) seq.append(l, randn(rng, longest * kvHeads * 4), randn(rng, longest * kvHeads * 4));
  const k = lengths.slice(0, kvHeads).reduce((a, b) => a + b, 0) / kvHeads;
  const shape = EvictionPolicy.custom((v) => Float32Array.from({ length: v.length },
    (_, r) => (r < lengths[v.layer * kvHeads + v.kvHead]! ? 1 : 0)), { sinks: 0, recent: 0 });
  seq.evict(shape, { keep: k, perHead: 'adaptive', safeguard: 0 });
  expect(allLengths(seq)).toEqual(lengths);
  return { cache, seq };
}

function scoresFor(rng: Rng, lengths: number[]): Float32Array[] {
  // Heads differ in how concentrated their scores are (a few hot rows vs spread out).
  return lengths.map((n, i) => Float32Array.from({ length: n }, () => (i % 3 === 0 ? rng.uniform() ** 8 : rng.uniform()) * (1 + (i % 4))));
}

describe('budgets', () => {
  it('apportion worked example: proportional shares, caps water-filled, largest remainder', () => {
    // total 10 over weights [1, 1, 2] -> 2.5, 2.5, 5; caps [9, 1, 9]: entry 1 clipped to 1, the
    // remaining 9 re-shared 1:2 -> 3, 6. Integers [3, 1, 6].
    expect(apportion(10, [1, 1, 2], [9, 1, 9])).toEqual([3, 1, 6]);
    // 7 over three equal weights: 2.33 each -> [3, 2, 2] (ties of the remainder: lower index).
    expect(apportion(7, [1, 1, 1], [9, 9, 9])).toEqual([3, 2, 2]);
  });

  it('uniform { keep } and { ratio } keep min(keep, n) and round(ratio × n) per stream', () => {
    const rng = testRng();
    const cache = new KVCache({ layers: 2, kvHeads: 2, headDim: 4, blockSize: 8, threads: 1 });
    const seq = cache.createSequence();
    for (let l = 0; l < 2; l++) seq.append(l, randn(rng, 25 * 8), randn(rng, 25 * 8));
    const r = seq.evict(EvictionPolicy.keyNorm(), { ratio: 0.5 }); // round(12.5) = 13
    expect(Array.from(r.keptPerStream)).toEqual([13, 13, 13, 13]);
    const r2 = seq.evict(EvictionPolicy.keyNorm(), { keep: 20 });
    expect(Array.from(r2.keptPerStream)).toEqual([13, 13, 13, 13]);
    const r3 = seq.evict(EvictionPolicy.keyNorm({ sinks: 0, recent: 0 }), { layers: [1, 0.3] }); // 13, round(3.9) = 4
    expect(Array.from(r3.keptPerStream)).toEqual([13, 13, 4, 4]);
    cache.dispose();
  });

  it('adaptive budgets sum to the requested total per layer, respect the safeguard, equal the reference', () => {
    const rng = testRng();
    for (let trial = 0; trial < 6; trial++) {
      const layers = rng.int(1, 3);
      const kvHeads = rng.int(2, 5);
      const T = rng.int(20, 100);
      const cache = new KVCache({ layers, kvHeads, headDim: 4, blockSize: 8, threads: 1 });
      const seq = cache.createSequence();
      for (let l = 0; l < layers; l++) seq.append(l, randn(rng, T * kvHeads * 4), randn(rng, T * kvHeads * 4));
      const lengths = new Array(layers * kvHeads).fill(T);
      const scores = scoresFor(rng, lengths);
      const sinks = rng.int(0, 3);
      const recent = rng.int(0, 4);
      const safeguard = [0, 0.2, 0.5, 1][rng.int(0, 3)]!;
      const budget: EvictionBudget = trial % 2 ? { ratio: rng.uniform() } : { keep: rng.int(0, T + 5) };
      const policy = EvictionPolicy.custom((v) => scores[v.layer * kvHeads + v.kvHead]!, { sinks, recent });
      const share = shares(lengths, layers, kvHeads, budget);
      const r = seq.evict(policy, { ...budget, perHead: 'adaptive', safeguard });
      for (let l = 0; l < layers; l++) {
        const layerShares = share.slice(l * kvHeads, (l + 1) * kvHeads);
        const expected = adaptiveRows(scores.slice(l * kvHeads, (l + 1) * kvHeads), layerShares, safeguard, sinks, recent);
        let total = 0;
        for (let h = 0; h < kvHeads; h++) {
          const kept = keptRows(seq, l, h);
          expect(kept, `trial ${trial} layer ${l} head ${h}`).toEqual(expected[h]);
          expect(kept.length).toBeGreaterThanOrEqual(Math.min(layerShares[h]!, Math.ceil(safeguard * layerShares[h]! - 1e-9)));
          total += kept.length;
        }
        expect(total, `layer ${l} total`).toBe(layerShares.reduce((a, b) => a + b, 0));
      }
      expect(r.rowsAfter).toBe(share.reduce((a, b) => a + b, 0));
      cache.dispose();
    }
  });

  it('adaptive with safeguard 1 is the uniform budget', () => {
    const rng = testRng();
    const cache = new KVCache({ layers: 1, kvHeads: 3, headDim: 4, threads: 1 });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 40 * 12), randn(rng, 40 * 12));
    const scores = scoresFor(rng, [40, 40, 40]);
    const fork = seq.fork();
    const policy = EvictionPolicy.custom((v) => scores[v.kvHead]!, { sinks: 1, recent: 2 });
    seq.evict(policy, { keep: 11, perHead: 'adaptive', safeguard: 1 });
    fork.evict(policy, { keep: 11 });
    for (let h = 0; h < 3; h++) {
      expect(keptRows(seq, 0, h)).toEqual(keptRows(fork, 0, h));
      expect(keptRows(fork, 0, h)).toEqual(selectRows(scores[h]!, 11, 1, 2));
    }
    cache.dispose();
  });

  it('pyramid keeps the same total, decreasing from the bottom layer to the top, capped by rows', () => {
    const rng = testRng();
    const layers = 6;
    const kvHeads = 2;
    const T = 60;
    const cache = new KVCache({ layers, kvHeads, headDim: 4, blockSize: 8, threads: 1 });
    const seq = cache.createSequence();
    for (let l = 0; l < layers; l++) seq.append(l, randn(rng, T * kvHeads * 4), randn(rng, T * kvHeads * 4));
    const lengths = new Array(layers * kvHeads).fill(T);
    for (const [budget, slope] of [[{ ratio: 0.25 }, 0.5], [{ keep: 50 }, 1], [{ ratio: 0.1 }, 0]] as const) {
      const fork = seq.fork();
      const expected = shares(lengths, layers, kvHeads, { ...budget, pyramid: true, slope });
      const uniformTotal = shares(lengths, layers, kvHeads, budget).reduce((a, b) => a + b, 0);
      const r = fork.evict(EvictionPolicy.keyNorm(), { ...budget, schedule: 'pyramid', slope });
      expect(Array.from(r.keptPerStream), JSON.stringify(budget)).toEqual(expected);
      expect(r.rowsAfter).toBe(uniformTotal);
      const perLayer = Array.from({ length: layers }, (_, l) => expected[l * 2]! + expected[l * 2 + 1]!);
      for (let l = 1; l < layers; l++) expect(perLayer[l]!).toBeLessThanOrEqual(perLayer[l - 1]!);
      for (const k of expected) expect(k).toBeLessThanOrEqual(T);
      if (slope > 0) expect(perLayer[0]!).toBeGreaterThan(perLayer[layers - 1]!);
      fork.free();
    }
    // Worked example: 25% of 60 rows = 15 per stream, 30 per layer, 180 in all; slope 0.5 gives
    // weights 1.5, 1.3, 1.1, 0.9, 0.7, 0.5 (sum 6) -> 45, 39, 33, 27, 21, 15 rows per layer.
    const r = seq.fork().evict(EvictionPolicy.keyNorm(), { ratio: 0.25, schedule: 'pyramid' });
    expect(Array.from({ length: layers }, (_, l) => r.keptPerStream[2 * l]! + r.keptPerStream[2 * l + 1]!)).toEqual([45, 39, 33, 27, 21, 15]);
    cache.dispose();
  });

  it('pyramid with adaptive heads: layer totals follow the pyramid, heads compete within them', () => {
    const rng = testRng();
    const layers = 3;
    const kvHeads = 3;
    const T = 40;
    const cache = new KVCache({ layers, kvHeads, headDim: 4, threads: 1 });
    const seq = cache.createSequence();
    for (let l = 0; l < layers; l++) seq.append(l, randn(rng, T * kvHeads * 4), randn(rng, T * kvHeads * 4));
    const lengths = new Array(layers * kvHeads).fill(T);
    const scores = scoresFor(rng, lengths);
    const policy = EvictionPolicy.custom((v) => scores[v.layer * kvHeads + v.kvHead]!, { sinks: 0, recent: 0 });
    const share = shares(lengths, layers, kvHeads, { ratio: 0.3, pyramid: true });
    seq.evict(policy, { ratio: 0.3, schedule: 'pyramid', perHead: 'adaptive' });
    for (let l = 0; l < layers; l++) {
      const expected = adaptiveRows(scores.slice(l * 3, l * 3 + 3), share.slice(l * 3, l * 3 + 3), 0.2, 0, 0);
      for (let h = 0; h < kvHeads; h++) expect(keptRows(seq, l, h)).toEqual(expected[h]);
    }
    cache.dispose();
  });

  it('streams of different lengths: ratio per stream, pyramid shares within a layer by length', () => {
    const rng = testRng();
    const lengths = [30, 10, 20, 20];
    const { cache, seq } = withLengths(rng, 2, 2, lengths);
    const uniform = seq.fork().evict(EvictionPolicy.keyNorm(), { ratio: 0.5 });
    expect(Array.from(uniform.keptPerStream)).toEqual([15, 5, 10, 10]);
    // pyramid: total 40, layer weights 1.5 / 0.5 -> 30 and 10; layer 0 splits 30 by lengths
    // 30:10 -> 22.5, 7.5 -> [23, 7] (equal remainders: the lower head); layer 1 -> [5, 5].
    const r = seq.fork().evict(EvictionPolicy.keyNorm(), { ratio: 0.5, schedule: 'pyramid' });
    expect(Array.from(r.keptPerStream)).toEqual(shares(lengths, 2, 2, { ratio: 0.5, pyramid: true }));
    expect(Array.from(r.keptPerStream)).toEqual([23, 7, 5, 5]);
    cache.dispose();
  });
});
