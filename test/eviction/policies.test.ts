// Each policy against the plain TypeScript reference (reference.ts): handcrafted cases with
// worked examples, and random cases. Scores computed natively from dequantized keys (snapKV,
// tova, keyNorm) are compared to float64 references with a tolerance; the kept rows must then
// be exactly the reference selection on the native scores, and no dropped row may beat a
// kept, unprotected one under the float64 scores by more than that tolerance.
import { describe, expect, it } from 'vitest';
import { EvictionPolicy, KVCache, type Sequence } from '../../lib/index';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { filled, keptRows } from './helpers';
import {
  keyNormScores, protectedOrder, randomScores, recencyScores, selectRows, snapKVScores, tovaScores, vectors,
} from './reference';

const SCORE_TOL = { abs: 2e-6, rel: 1e-5 };

/** Kept rows equal the reference selection on `scores`; returns what evict kept per stream. */
function checkSelection(seq: Sequence, policy: EvictionPolicy, keep: number, scoresOf: (l: number, h: number) => ArrayLike<number>, label: string) {
  const c = seq.cache.config;
  const expected: number[][] = [];
  for (let l = 0; l < c.layers; l++) {
    for (let h = 0; h < c.kvHeads; h++) expected.push(selectRows(scoresOf(l, h), keep, policy.sinks, policy.recent));
  }
  const r = seq.evict(policy, { keep });
  for (let l = 0; l < c.layers; l++) {
    for (let h = 0; h < c.kvHeads; h++) {
      expect(keptRows(seq, l, h), `${label}: layer ${l} head ${h}`).toEqual(expected[l * c.kvHeads + h]);
    }
  }
  expect(Array.from(r.keptPerStream)).toEqual(expected.map((e) => e.length));
}

/** No dropped row beats a kept unprotected row under the float64 reference scores (beyond tol). */
function checkNearOptimal(ref: Float64Array, kept: number[], sinks: number, recent: number, tol: number, label: string) {
  const prot = new Set(protectedOrder(ref.length, sinks, recent));
  const keptSet = new Set(kept);
  let minKept = Infinity;
  let maxDropped = -Infinity;
  for (let r = 0; r < ref.length; r++) {
    if (prot.has(r)) continue;
    if (keptSet.has(r)) minKept = Math.min(minKept, ref[r]!);
    else maxDropped = Math.max(maxDropped, ref[r]!);
  }
  expect(maxDropped, label).toBeLessThanOrEqual(minKept + tol);
}

describe('recency policies', () => {
  it('slidingWindow keeps the newest window rows (its own budget by default)', () => {
    const rng = testRng();
    const { cache, seq } = filled(rng, { layers: 2, kvHeads: 2, headDim: 8, blockSize: 4 }, 23);
    // 23 rows, window 5 -> rows 18..22 in every stream.
    const r = seq.evict(EvictionPolicy.slidingWindow({ window: 5 }));
    for (let l = 0; l < 2; l++) for (let h = 0; h < 2; h++) expect(keptRows(seq, l, h)).toEqual([18, 19, 20, 21, 22]);
    expect(r.rowsAfter).toBe(20);
    // A larger explicit budget keeps the newest `keep` rows (of what is left).
    seq.evict(EvictionPolicy.slidingWindow({ window: 2 }), { keep: 3 });
    expect(keptRows(seq, 1, 1)).toEqual([20, 21, 22]);
    cache.dispose();
  });

  it('streamingLLM keeps the sinks and the newest window rows', () => {
    const rng = testRng();
    const { cache, seq } = filled(rng, { layers: 1, kvHeads: 3, headDim: 8, blockSize: 8 }, 40);
    // sinks 2 + window 3 of 40 rows -> {0, 1, 37, 38, 39}.
    seq.evict(EvictionPolicy.streamingLLM({ sinks: 2, window: 3 }));
    for (let h = 0; h < 3; h++) expect(keptRows(seq, 0, h)).toEqual([0, 1, 37, 38, 39]);
    cache.dispose();
  });

  it('recency scores are row indices; random cases equal the reference', () => {
    const rng = testRng();
    for (let trial = 0; trial < 5; trial++) {
      const T = rng.int(5, 60);
      const { cache, seq } = filled(rng, { layers: 1, kvHeads: 2, headDim: 4, blockSize: rng.int(1, 9) }, T, { calls: 0, tq: 1 });
      const policy = EvictionPolicy.streamingLLM({ sinks: rng.int(0, 4), window: rng.int(0, 8) });
      expect(Array.from(policy.scores(seq, 0, 0))).toEqual(Array.from(recencyScores(T)));
      checkSelection(seq, policy, rng.int(0, T), () => recencyScores(T), `trial ${trial}`);
      cache.dispose();
    }
  });
});

describe('h2o', () => {
  it('keeps the rows with the most accumulated attention mass, plus sinks and recent rows', () => {
    const rng = testRng();
    for (let trial = 0; trial < 4; trial++) {
      const T = rng.int(20, 90);
      const { cache, seq } = filled(rng, { layers: 2, kvHeads: 2, headDim: 16, queryHeads: 4, blockSize: 8 }, T, { calls: 3, tq: 4 });
      const policy = EvictionPolicy.h2o({ sinks: rng.int(0, 3), recent: rng.int(0, 10) });
      const scores = new Map<string, Float32Array>();
      for (let l = 0; l < 2; l++) {
        for (let h = 0; h < 2; h++) {
          scores.set(`${l}/${h}`, seq.scores(l, h));
          // the policy's scores are the accumulated mass itself
          expect(Array.from(policy.scores(seq, l, h))).toEqual(Array.from(seq.scores(l, h)));
        }
      }
      checkSelection(seq, policy, rng.int(1, T), (l, h) => scores.get(`${l}/${h}`)!, `trial ${trial}`);
      cache.dispose();
    }
  });

  it('worked example: the row everyone attends to survives', () => {
    // Rows 0..9 with zero keys except row 4, whose key points along the queries: every query
    // puts most of its mass on row 4. keep 3, sinks 1, recent 1 -> {0, 4, 9}.
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 2, threads: 1 });
    const seq = cache.createSequence();
    const keys = new Float32Array(20);
    keys[8] = 4;
    seq.append(0, keys, randn(testRng(), 20));
    seq.attention(0, Float32Array.from([3, 0, 3, 0]), { accumulateScores: true });
    seq.evict(EvictionPolicy.h2o({ sinks: 1, recent: 1 }), { keep: 3 });
    expect(keptRows(seq, 0, 0)).toEqual([0, 4, 9]);
    cache.dispose();
  });
});

describe('snapKV, tova and keyNorm: native scores from dequantized keys', () => {
  it('snapKV worked example: max-pooling spreads a hot row to its neighbours; ties go to the lower row', () => {
    // head_dim 2, 10 rows, keys zero except row 2 = [4, 0]; recorded queries [3, 0].
    // Mean attention peaks at row 2; pool 3 over the prefix rows 0..7 gives rows 1, 2, 3 the
    // same (peak) score. window 2 protects rows 8, 9; sinks 1 protects row 0. keep 5 leaves two
    // scored rows: the tied rows 1, 2, 3 -> rows 1 and 2. Kept {0, 1, 2, 8, 9}.
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 2, threads: 1 });
    const seq = cache.createSequence();
    const keys = new Float32Array(20);
    keys[4] = 4;
    seq.append(0, keys, randn(testRng(), 20));
    seq.attention(0, Float32Array.from([3, 0, 3, 0]), { recordQueries: true });
    const policy = EvictionPolicy.snapKV({ window: 2, pool: 3, sinks: 1 });
    const s = policy.scores(seq, 0, 0);
    expect(s[1]).toBe(s[2]);
    expect(s[3]).toBe(s[2]);
    expect(s[0]!).toBeLessThan(s[2]!);
    seq.evict(policy, { keep: 5 });
    expect(keptRows(seq, 0, 0)).toEqual([0, 1, 2, 8, 9]);
    cache.dispose();
  });

  it('keyNorm worked example: low-norm keys first', () => {
    // key of row r = [r, 0] except row 5 = [0.5, 0]: norms 0, 1, 2, 3, 4, 0.5, 6, 7.
    // keep 3, no protection -> rows 0, 5, 1.
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 2, keys: 'f32', threads: 1 });
    const seq = cache.createSequence();
    const keys = new Float32Array(16);
    for (let r = 0; r < 8; r++) keys[2 * r] = r;
    keys[10] = 0.5;
    seq.append(0, keys, keys.slice());
    seq.evict(EvictionPolicy.keyNorm({ sinks: 0, recent: 0 }), { keep: 3 });
    expect(keptRows(seq, 0, 0)).toEqual([0, 1, 5]);
    cache.dispose();
  });

  for (const storage of ['f16', 'int8', 'int4'] as const) {
    it(`random cases, keys ${storage}${storage === 'int8' ? ' rotated' : ''}: scores and selection`, () => {
      const rng = testRng();
      for (let trial = 0; trial < 3; trial++) {
        const T = rng.int(30, 120);
        const ratio = [1, 2, 4][trial]!;
        const headDim = 32;
        const { cache, seq } = filled(rng, {
          layers: 2, kvHeads: 2, headDim, queryHeads: 2 * ratio, blockSize: 16, keys: storage, values: storage,
          groupSize: 16, rotate: storage === 'int8', recentQueries: 24,
        }, T, { calls: 2, tq: 5 });
        const group = ratio;
        const window = rng.int(1, 6);
        const pool = [1, 3, 5, 7][rng.int(0, 3)]!;
        const policies: [EvictionPolicy, (l: number, h: number) => Float64Array][] = [
          [EvictionPolicy.snapKV({ window, pool }), (l, h) => {
            const rows = seq.read(l, h);
            return snapKVScores({ keys: rows.keys, beta: rows.beta, n: rows.positions.length }, headDim,
              vectors(seq.recordedQueries(l, h).recent, headDim), window, group, pool);
          }],
          [EvictionPolicy.tova(), (l, h) => {
            const rows = seq.read(l, h);
            return tovaScores({ keys: rows.keys, beta: rows.beta, n: rows.positions.length }, headDim,
              vectors(seq.recordedQueries(l, h).recent, headDim), group);
          }],
          [EvictionPolicy.keyNorm(), (l, h) => {
            const rows = seq.read(l, h);
            return keyNormScores({ keys: rows.keys, n: rows.positions.length }, headDim);
          }],
        ];
        // Each policy on its own fork, so all three see the same rows.
        for (const [policy, ref] of policies) {
          const fork = seq.fork();
          const native = new Map<number, Float32Array>();
          const refs = new Map<number, Float64Array>();
          for (let l = 0; l < 2; l++) {
            for (let h = 0; h < 2; h++) {
              const s = policy.scores(fork, l, h);
              const r = ref(l, h);
              expectClose(s, r, { abs: SCORE_TOL.abs * (policy.kind === 'keyNorm' ? 10 : 1) }, `${policy.kind} scores l${l} h${h}`);
              native.set(l * 2 + h, s);
              refs.set(l * 2 + h, r);
            }
          }
          const keep = rng.int(policy.sinks + policy.recent, T);
          checkSelection(fork, policy, keep, (l, h) => native.get(l * 2 + h)!, `${storage} ${policy.kind}`);
          for (let l = 0; l < 2; l++) {
            for (let h = 0; h < 2; h++) {
              checkNearOptimal(refs.get(l * 2 + h)!, keptRows(fork, l, h), policy.sinks, policy.recent,
                policy.kind === 'keyNorm' ? 2e-5 : 2e-6, `${policy.kind} l${l} h${h}`);
            }
          }
          fork.free();
        }
        cache.dispose();
      }
    });
  }

  it('snapKV uses only the newest window × group recorded vectors', () => {
    // Two recording calls: old queries point at row 3, the newest ones at row 6. window 1 with
    // group 2 uses only the newest token's two vectors, so row 6 (and its pool neighbours) win.
    const cache = new KVCache({ layers: 1, kvHeads: 1, queryHeads: 2, headDim: 2, threads: 1 });
    const seq = cache.createSequence();
    const keys = new Float32Array(2 * 12);
    keys[2 * 3] = 4;
    keys[2 * 6 + 1] = 4;
    seq.append(0, keys, randn(testRng(), 24));
    seq.attention(0, Float32Array.from([5, 0, 5, 0, 5, 0, 5, 0]), { recordQueries: true }); // tq 2: rows 3
    seq.attention(0, Float32Array.from([0, 5, 0, 5]), { recordQueries: true }); // tq 1: row 6
    const q = seq.recordedQueries(0, 0);
    expect(q.seen).toBe(6);
    expect(Array.from(q.recent)).toEqual([5, 0, 5, 0, 5, 0, 5, 0, 0, 5, 0, 5]); // oldest first
    seq.evict(EvictionPolicy.snapKV({ window: 1, pool: 1, sinks: 0, recent: 0 }), { keep: 1 });
    expect(keptRows(seq, 0, 0)).toEqual([6]);
    cache.dispose();
  });
});

describe('random and custom', () => {
  it('random(seed) equals the documented hash and is deterministic', () => {
    const rng = testRng();
    const T = 50;
    const { cache, seq } = filled(rng, { layers: 2, kvHeads: 3, headDim: 4 }, T, { calls: 0, tq: 1 });
    const seed = rng.int(0, 0xffffffff);
    const policy = EvictionPolicy.random(seed);
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 3; h++) {
        expect(Array.from(policy.scores(seq, l, h))).toEqual(Array.from(randomScores(seed, l * 3 + h, T)));
      }
    }
    const fork = seq.fork();
    checkSelection(seq, policy, 20, (l, h) => randomScores(seed, l * 3 + h, T), 'random');
    checkSelection(fork, EvictionPolicy.random(seed), 20, (l, h) => randomScores(seed, l * 3 + h, T), 'random again');
    for (let l = 0; l < 2; l++) for (let h = 0; h < 3; h++) expect(keptRows(fork, l, h)).toEqual(keptRows(seq, l, h));
    cache.dispose();
  });

  it('custom: one call per stream with a typed view; keys on request', () => {
    const rng = testRng();
    const T = 30;
    const { cache, seq } = filled(rng, { layers: 2, kvHeads: 2, headDim: 8, queryHeads: 4 }, T);
    const seen: string[] = [];
    const policy = EvictionPolicy.custom({
      keys: true,
      sinks: 0,
      recent: 0,
      fn: (v) => {
        seen.push(`${v.layer}/${v.kvHead}`);
        expect(v.length).toBe(T);
        expect(v.positions).toBeInstanceOf(Int32Array);
        expect(Array.from(v.positions)).toEqual([...Array(T).keys()]);
        expect(Array.from(v.scores)).toEqual(Array.from(seq.scores(v.layer, v.kvHead)));
        expect(Array.from(v.keys!)).toEqual(Array.from(seq.read(v.layer, v.kvHead).keys));
        expect(v.values).toBeUndefined();
        // keep the rows whose first key element is largest
        return Float32Array.from({ length: v.length }, (_, r) => v.keys![r * 8]!);
      },
    });
    const expected = [0, 1, 2, 3].map((i) => {
      const k = seq.read(Math.floor(i / 2), i % 2).keys;
      return selectRows(Float32Array.from({ length: T }, (_, r) => k[r * 8]!), 7, 0, 0);
    });
    seq.evict(policy, { keep: 7 });
    expect(seen).toEqual(['0/0', '0/1', '1/0', '1/1']);
    for (let i = 0; i < 4; i++) expect(keptRows(seq, Math.floor(i / 2), i % 2)).toEqual(expected[i]);
    // without keys: not read
    const noKeys = EvictionPolicy.custom((v) => {
      expect(v.keys).toBeUndefined();
      return new Float32Array(v.length);
    });
    seq.evict(noKeys, { keep: 7 });
    cache.dispose();
  });

  it('policies are immutable values', () => {
    const p = EvictionPolicy.snapKV({ window: 8, pool: 5 });
    expect(Object.isFrozen(p)).toBe(true);
    expect(p.kind).toBe('snapKV');
    expect(p.recent).toBe(8);
    expect(p.sinks).toBe(4);
    expect(() => { (p as { sinks: number }).sinks = 1; }).toThrow();
    expect(EvictionPolicy.h2o().recent).toBe(32);
    expect(EvictionPolicy.slidingWindow({ window: 7 }).sinks).toBe(0);
  });
});
