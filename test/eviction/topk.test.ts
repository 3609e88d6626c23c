// Top-k selection (kvc/row_select.h + protected rows, the CPU backend's selectRows) through custom policies with given
// scores, compared as sets against the sort-based reference with the tie rule: equal scores →
// the lower row index wins; protected rows are forced in (sinks first, then the newest).
import { describe, expect, it } from 'vitest';
import { EvictionPolicy, KVCache } from '../../lib/index';
import { randn, testRng } from '../reference/random';
import { keptRows } from './helpers';
import { selectRows } from './reference';

/** A one-layer, one-head cache whose stream holds rows 0..n-1 (positions = row indices). */
function stream(n: number, blockSize = 4) {
  const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 4, blockSize, threads: 1 });
  const seq = cache.createSequence();
  const rng = testRng(`n${n}`);
  seq.append(0, randn(rng, n * 4), randn(rng, n * 4));
  return { cache, seq };
}

function given(scores: number[] | Float32Array, protect: { sinks: number; recent: number }) {
  const s = Float32Array.from(scores);
  return EvictionPolicy.custom(() => s, protect);
}

describe('top-k selection', () => {
  it('worked example: protected rows first, then the best scores, ties to the lower row', () => {
    // rows:    0    1    2    3    4    5    6    7
    // scores: .5   .9   .1   .9   .3   .7   .2   .9
    // keep 4, sinks 1, recent 1: rows 0 and 7 are protected; of rows 1..6 the best two are the
    // tied 0.9s at rows 1 and 3 (row 7's 0.9 is already in) -> keep {0, 1, 3, 7}.
    const { cache, seq } = stream(8);
    const r = seq.evict(given([0.5, 0.9, 0.1, 0.9, 0.3, 0.7, 0.2, 0.9], { sinks: 1, recent: 1 }), { keep: 4 });
    expect(keptRows(seq, 0, 0)).toEqual([0, 1, 3, 7]);
    expect(r.rowsBefore).toBe(8);
    expect(r.rowsAfter).toBe(4);
    expect(Array.from(r.keptPerStream)).toEqual([4]);
    cache.dispose();
  });

  it('all-equal scores keep the lowest rows; protection beyond the budget keeps sinks, then the newest', () => {
    const { cache, seq } = stream(12);
    seq.evict(given(new Array(12).fill(1), { sinks: 0, recent: 0 }), { keep: 5 });
    expect(keptRows(seq, 0, 0)).toEqual([0, 1, 2, 3, 4]);
    cache.dispose();

    // sinks 3 + recent 5 = 8 protected rows, budget 4: rows 0, 1, 2 (sinks) and 11 (newest).
    const b = stream(12);
    b.seq.evict(given(new Array(12).fill(0), { sinks: 3, recent: 5 }), { keep: 4 });
    expect(keptRows(b.seq, 0, 0)).toEqual([0, 1, 2, 11]);
    b.cache.dispose();
  });

  it('±Infinity and extreme values order correctly', () => {
    const scores = [0, -Infinity, Infinity, -1e30, 1e30, -0, 3.4e38, -3.4e38, 1e-45, -1e-45];
    const { cache, seq } = stream(scores.length);
    seq.evict(given(scores, { sinks: 0, recent: 0 }), { keep: 5 });
    // Infinity (2), 3.4e38 (6), 1e30 (4), 1e-45 (8), then 0 and -0 tie (0 and 5): row 0 wins.
    expect(keptRows(seq, 0, 0)).toEqual([0, 2, 4, 6, 8]);
    cache.dispose();
  });

  it('random scores with many ties equal the reference set, for every k', () => {
    const rng = testRng();
    for (const n of [1, 7, 33, 100]) {
      for (const k of [0, 1, Math.floor(n / 3), n - 1, n, n + 5]) {
        const sinks = rng.int(0, 3);
        const recent = rng.int(0, 5);
        const scores = Float32Array.from({ length: n }, () => rng.int(0, 4) * 0.25);
        const { cache, seq } = stream(n);
        const r = seq.evict(given(scores, { sinks, recent }), { keep: k });
        const expected = selectRows(scores, k, sinks, recent);
        expect(keptRows(seq, 0, 0), `n ${n} k ${k} sinks ${sinks} recent ${recent}`).toEqual(expected);
        expect(r.rowsAfter).toBe(Math.min(n, Math.max(0, k)));
        cache.dispose();
      }
    }
  });

  it('a budget bigger than the stream keeps everything and frees nothing', () => {
    const { cache, seq } = stream(10);
    const before = cache.stats();
    const r = seq.evict(EvictionPolicy.keyNorm(), { keep: 1000 });
    expect(keptRows(seq, 0, 0)).toEqual([...Array(10).keys()]);
    expect(r.blocksFreed).toBe(0);
    expect(r.bytesFreed).toBe(0);
    expect(cache.stats()).toEqual(before);
    const r1 = seq.evict(EvictionPolicy.keyNorm(), { ratio: 1 });
    expect(r1.rowsAfter).toBe(10);
    cache.dispose();
  });

  it('keep 0 empties the stream and frees every block, whatever the protection', () => {
    const { cache, seq } = stream(10);
    const r = seq.evict(EvictionPolicy.streamingLLM({ sinks: 4, window: 4 }), { keep: 0 });
    expect(seq.length(0, 0)).toBe(0);
    expect(r.blocksFreed).toBe(3);
    expect(cache.stats().blocksUsed).toBe(0);
    cache.dispose();
  });
});
