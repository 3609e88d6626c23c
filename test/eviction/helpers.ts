// Shared pieces of the eviction tests: caches filled with fresh random rows, attention calls
// that accumulate scores and record queries, and "which rows were kept" from positions.
import { expect } from 'vitest';
import { KVCache, type KVCacheOptions, type Sequence } from '../../lib/index';
import { type Rng, randn } from '../reference/random';

export interface Filled {
  cache: KVCache;
  seq: Sequence;
}

/**
 * A cache with `T` rows per stream on every layer (positions 0..T-1, so a row's position is
 * its original index), appended in `chunks` pieces; then `observe` attention calls with Tq
 * random queries per layer that accumulate scores and record queries.
 */
export function filled(rng: Rng, options: KVCacheOptions, T: number, observe = { calls: 2, tq: 3 }, chunks = 2): Filled {
  const cache = new KVCache({ threads: 1, ...options });
  const c = cache.config;
  const seq = cache.createSequence();
  for (let l = 0; l < c.layers; l++) {
    let done = 0;
    for (let i = 0; i < chunks; i++) {
      const t = i === chunks - 1 ? T - done : Math.floor(T / chunks);
      if (t <= 0) continue;
      seq.append(l, randn(rng, t * c.kvHeads * c.headDim), randn(rng, t * c.kvHeads * c.headDim));
      done += t;
    }
    for (let k = 0; k < observe.calls; k++) {
      seq.attention(l, randn(rng, observe.tq * c.queryHeads * c.headDim, 2), { accumulateScores: true, recordQueries: true });
    }
  }
  return { cache, seq };
}

/** Positions of one stream (= original row indices for sequences made by `filled`). */
export function keptRows(seq: Sequence, layer: number, kvHead: number): number[] {
  return Array.from(seq.read(layer, kvHead).positions);
}

export function expectRows(seq: Sequence, layer: number, kvHead: number, expected: number[], label: string): void {
  expect(keptRows(seq, layer, kvHead), label).toEqual(expected);
}

/** Every stream's length, layer-major. */
export function allLengths(seq: Sequence): number[] {
  const c = seq.cache.config;
  const out: number[] = [];
  for (let l = 0; l < c.layers; l++) out.push(...seq.lengths(l));
  return out;
}
