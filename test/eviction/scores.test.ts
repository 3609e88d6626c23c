// Accumulated attention mass (attention with accumulateScores) against the float64 reference:
// per row, the attention probabilities summed over the GQA group's query heads and the Tq
// queries (decode and causal Tq > 1), summed over calls; survives fork; resetScores zeroes it.
// Recorded queries: the recent ring oldest first, the reservoir's size and `seen`.
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { attentionMass } from './reference';

describe('accumulated scores', () => {
  for (const [label, tqs] of [['decode', [1, 1, 1]], ['Tq > 1, causal', [5, 2, 7]]] as const) {
    it(`${label}: scores = Σ probabilities over the group and the queries (f16, GQA 4)`, () => {
      const rng = testRng();
      const D = 32;
      const kvHeads = 2;
      const queryHeads = 8;
      const cache = new KVCache({ layers: 2, kvHeads, headDim: D, queryHeads, blockSize: 16, threads: 2 });
      const seq = cache.createSequence();
      const expected = [new Float64Array(0), new Float64Array(0)];
      for (const tq of tqs) {
        // append rows, then attend with tq queries (they sit at the last tq rows)
        seq.append(1, randn(rng, (tq + 20) * kvHeads * D), randn(rng, (tq + 20) * kvHeads * D));
        const queries = randn(rng, tq * queryHeads * D, 1.5);
        seq.attention(1, queries, { accumulateScores: true });
        for (let h = 0; h < kvHeads; h++) {
          const rows = seq.read(1, h);
          const mass = attentionMass(rows.keys, rows.positions, D, queries, tq, queryHeads, 4, h);
          const acc = new Float64Array(mass.length);
          acc.set(expected[h]!);
          for (let r = 0; r < mass.length; r++) acc[r] = acc[r]! + mass[r]!;
          expected[h] = acc;
        }
      }
      for (let h = 0; h < kvHeads; h++) {
        const s = seq.scores(1, h);
        expect(s.length).toBe(seq.length(1, h));
        expectClose(s, expected[h]!, { abs: 2e-6 * tqs.reduce((a, b) => a + b, 0) * 4 }, `head ${h}`);
        // Σ over rows = number of (query, head) pairs: each query's probabilities sum to 1
        const total = s.reduce((a, b) => a + b, 0);
        expect(total).toBeCloseTo(4 * tqs.reduce((a, b) => a + b, 0), 3);
      }
      // layer 0 never accumulated: zeros
      expect(Array.from(seq.scores(0, 0))).toEqual([]);
      cache.dispose();
    });
  }

  it('rows appended after accumulation score 0; scores survive fork and are independent after; reset zeroes', () => {
    const rng = testRng();
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, queryHeads: 2, threads: 1 });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 10 * 8), randn(rng, 10 * 8));
    seq.attention(0, randn(rng, 2 * 8), { accumulateScores: true });
    const first = seq.scores(0, 0);
    seq.append(0, randn(rng, 3 * 8), randn(rng, 3 * 8));
    const extended = seq.scores(0, 0);
    expect(Array.from(extended)).toEqual([...Array.from(first), 0, 0, 0]);
    const fork = seq.fork();
    expect(Array.from(fork.scores(0, 0))).toEqual(Array.from(extended));
    fork.attention(0, randn(rng, 2 * 8), { accumulateScores: true });
    expect(Array.from(seq.scores(0, 0))).toEqual(Array.from(extended)); // parent unchanged
    expect(fork.scores(0, 0)[12]!).toBeGreaterThan(0);
    seq.resetScores();
    expect(Array.from(seq.scores(0, 0))).toEqual(new Array(13).fill(0));
    expect(fork.scores(0, 0)[12]!).toBeGreaterThan(0); // the fork keeps its own
    // accumulation starts again from zero
    const q = randn(rng, 2 * 8);
    seq.attention(0, q, { accumulateScores: true });
    const rows = seq.read(0, 0);
    expectClose(seq.scores(0, 0), attentionMass(rows.keys, rows.positions, 8, q, 1, 2, 2, 0), { abs: 1e-6 }, 'after reset');
    cache.dispose();
  });
});

describe('recorded queries', () => {
  it('the recent ring holds the newest vectors oldest first; the reservoir a sample of at most queryReservoir', () => {
    const rng = testRng();
    const D = 4;
    const cache = new KVCache({ layers: 1, kvHeads: 2, headDim: D, queryHeads: 4, threads: 1, recentQueries: 5, queryReservoir: 6 });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 8 * 2 * D), randn(rng, 8 * 2 * D));
    // Query element 0 encodes (call, token, head): every vector is recognizable.
    const all: number[][] = [[], []];
    for (let call = 0; call < 3; call++) {
      const tq = 2;
      const q = new Float32Array(tq * 4 * D);
      for (let t = 0; t < tq; t++) {
        for (let qh = 0; qh < 4; qh++) {
          const code = call * 100 + t * 10 + qh;
          q[(t * 4 + qh) * D] = code;
          all[Math.floor(qh / 2)]!.push(code);
        }
      }
      seq.attention(0, q, { recordQueries: true });
    }
    for (let h = 0; h < 2; h++) {
      const r = seq.recordedQueries(0, h);
      expect(r.seen).toBe(12); // 3 calls × 2 tokens × 2 heads per group
      const recent = Array.from({ length: r.recent.length / D }, (_, i) => r.recent[i * D]!);
      expect(recent).toEqual(all[h]!.slice(-5));
      expect(r.reservoir.length).toBe(6 * D);
      const sample = Array.from({ length: 6 }, (_, i) => r.reservoir[i * D]!);
      for (const v of sample) expect(all[h]).toContain(v);
      expect(new Set(sample).size).toBe(6);
    }
    const none = cache.createSequence();
    none.append(0, randn(rng, 2 * D), randn(rng, 2 * D));
    const empty = none.recordedQueries(0, 1);
    expect(empty.seen).toBe(0);
    expect(empty.recent.length).toBe(0);
    expect(empty.reservoir.length).toBe(0);
    cache.dispose();
  });
});
