// The host low-rank attention (lowRank + rope, unequal key / value ranks: cpp/core/lowrank_host.cpp)
// runs its streams, and pieces of a prefill's query tokens, on the cache's threads. Every
// output, lse and attention-mass element is computed by one thread in one order, so caches
// with threads 2 and 3 must give exactly (bit for bit) what threads 1 gives, on the same rows:
// pre-RoPE keys with equal and unequal ranks, unprojected values, post-RoPE unequal ranks,
// calibrating and fitted streams, prefill (split into pieces) and decode, batches of
// sequences of different lengths, and positions re-indexed by rank after eviction. The
// threaded results are also held to the float64 reference.
import { describe, expect, it } from 'vitest';

import { EvictionPolicy, KVCache, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { errorCode } from '../support/error-code';
import { randn, testRng } from '../reference/random';
import { gappedPositions, type RopeSpec } from '../reference/rope-reference';
import { AS_STORED, reference, referenceWithLse, STORED } from './rope-attention-reference';

const THREADS = [1, 2, 3] as const;

interface Case {
  name: string;
  D: number;
  KVH: number;
  QH: number;
  keyRank: number;
  valueRank: number;
  keys: Storage;
  values: Storage;
  rope?: RopeSpec;
}

const CASES: Case[] = [
  { name: 'pre-RoPE, ranks 16 / 16 int8, GQA 2', D: 32, KVH: 2, QH: 4, keyRank: 16, valueRank: 16, keys: 'int8', values: 'int8',
    rope: { theta: 10000, dims: 32, style: 'interleaved' } },
  { name: 'pre-RoPE, ranks 16 / 32 f16, GQA 3', D: 64, KVH: 1, QH: 3, keyRank: 16, valueRank: 32, keys: 'f16', values: 'f16',
    rope: { theta: 500000, dims: 64, style: 'half' } },
  { name: 'pre-RoPE, rank 8 int4 keys, values unprojected int8, partial dims', D: 32, KVH: 2, QH: 2, keyRank: 8, valueRank: 32,
    keys: 'int4', values: 'int8', rope: { theta: 10000, dims: 16, style: 'interleaved' } },
  { name: 'post-RoPE, ranks 24 / 8 (no rope)', D: 32, KVH: 2, QH: 4, keyRank: 24, valueRank: 8, keys: 'f16', values: 'int4' },
];

function options(c: Case, threads: number): KVCacheOptions {
  return {
    layers: 2, kvHeads: c.KVH, headDim: c.D, queryHeads: c.QH, keys: c.keys, values: c.values, blockSize: 16, groupSize: 8,
    rope: c.rope, lowRank: { keys: c.keyRank, values: c.valueRank, calibrationRows: 24 }, threads,
  };
}

/** Runs body on one cache per thread count (same options otherwise), then disposes them. */
function withCaches(c: Case, body: (caches: KVCache[]) => void): void {
  const caches = THREADS.map((t) => new KVCache(options(c, t)));
  try {
    body(caches);
  } finally {
    for (const cache of caches) cache.dispose();
  }
}

/** Every thread count's output and lse equal (bit for bit) those of threads 1. */
function expectSameAsOneThread(got: { out: Float32Array; lse: Float32Array }[], label: string): void {
  for (let i = 1; i < THREADS.length; i++) {
    expect(got[i]!.out, `${label}, threads ${THREADS[i]}`).toEqual(got[0]!.out);
    expect(got[i]!.lse, `${label}, threads ${THREADS[i]}, lse`).toEqual(got[0]!.lse);
  }
}

/** Output and lse (one per query head and token) of one attention call. */
function attend(seq: Sequence, layer: number, queries: Float32Array, D: number, extra?: { positions?: 'stored' | 'rank' }) {
  const lse = new Float32Array(queries.length / D);
  const out = seq.attention(layer, queries, { lse, ...extra });
  return { out, lse };
}

describe('host low-rank attention: threads 2 and 3 give exactly what threads 1 gives', () => {
  for (const c of CASES) {
    it(`${c.name}: calibrating and fitted layers, prefill and decode, lse`, () => {
      const rng = testRng();
      withCaches(c, (caches) => {
        const seqs = caches.map((cache) => cache.createSequence());
        // layer 0 stays below the calibration point (rows held at full precision), layer 1 crosses it
        for (const [layer, T] of [[0, 19], [1, 150 + rng.int(0, 40)]] as const) {
          const positions = gappedPositions(rng, 7, T);
          const k = randn(rng, T * c.KVH * c.D), v = randn(rng, T * c.KVH * c.D);
          for (const s of seqs) s.append(layer, k, v, { positions });
          // 37 and 13 tokens: pieces of 4 or 8 tokens and a short last piece; 1: decode
          for (const tq of [Math.min(37, T), 13, 1]) {
            const q = randn(rng, tq * c.QH * c.D);
            const got = seqs.map((s) => attend(s, layer, q, c.D));
            expectSameAsOneThread(got, `${c.name}, layer ${layer}, tq ${tq}`);
            const last = seqs[THREADS.length - 1]!;
            const want = c.rope
              ? referenceWithLse(last, layer, c.KVH, c.D, c.QH, c.rope, q, STORED, AS_STORED)
              : attentionReference({ headDim: c.D, queryHeads: c.QH, streams: [...Array(c.KVH).keys()].map((h) => last.read(layer, h)), queries: q });
            const label = `${c.name}, layer ${layer}, tq ${tq}, threads 3 against float64`;
            expectClose(got[THREADS.length - 1]!.out, want.out, { rel: 2e-5, abs: 2e-5 }, label);
            expectClose(got[THREADS.length - 1]!.lse, want.lse, { rel: 2e-5, abs: 2e-5 }, `${label}, lse`);
          }
        }
      });
    });
  }

  it('a decode batch of sequences of different lengths (tasks ordered by work)', () => {
    const rng = testRng();
    const c = CASES[0]!;
    withCaches(c, (caches) => {
      const lengths = [30, 200, 90];
      const seqs = caches.map((cache) => lengths.map(() => cache.createSequence()));
      lengths.forEach((T, j) => {
        const k = randn(rng, T * c.KVH * c.D), v = randn(rng, T * c.KVH * c.D);
        for (const ss of seqs) ss[j]!.append(1, k, v);
      });
      {
        const tq = 1;  // attentionBatch is one decode step
        const q = randn(rng, lengths.length * tq * c.QH * c.D);
        const got = caches.map((cache, i) => {
          const lse = new Float32Array(lengths.length * tq * c.QH);
          return { out: cache.attentionBatch(1, seqs[i]!, q, { lse }), lse };
        });
        expectSameAsOneThread(got, `batch, tq ${tq}`);
        // each sequence's part of the threaded batch is its own attention
        const per = tq * c.QH * c.D;
        lengths.forEach((_, j) => {
          const mine = q.subarray(j * per, (j + 1) * per);
          const want = referenceWithLse(seqs[2]![j]!, 1, c.KVH, c.D, c.QH, c.rope!, mine, STORED, AS_STORED);
          expectClose(got[2]!.out.subarray(j * per, (j + 1) * per), want.out, { rel: 2e-5, abs: 2e-5 }, `batch, tq ${tq}, sequence ${j}`);
        });
      }
    });
  });

  it('attention mass, H2O eviction and positions re-indexed by rank: the same scores, rows and outputs', () => {
    const rng = testRng();
    const c = CASES[1]!;
    withCaches(c, (caches) => {
      const seqs = caches.map((cache) => cache.createSequence());
      const T = 160;
      const k = randn(rng, T * c.KVH * c.D), v = randn(rng, T * c.KVH * c.D), positions = gappedPositions(rng, 3, T);
      for (const s of seqs) s.append(1, k, v, { positions });
      const q = randn(rng, 12 * c.QH * c.D);
      for (const s of seqs) s.attention(1, q, { accumulateScores: true });
      for (let i = 1; i < THREADS.length; i++) expect(seqs[i]!.scores(1, 0), `scores, threads ${THREADS[i]}`).toEqual(seqs[0]!.scores(1, 0));
      for (const s of seqs) s.evict(EvictionPolicy.h2o({ sinks: 2, recent: 8 }), { ratio: 0.5 });
      expect(seqs[0]!.length(1, 0)).toBeLessThan(T);
      for (let i = 1; i < THREADS.length; i++) expect(seqs[i]!.read(1, 0).positions).toEqual(seqs[0]!.read(1, 0).positions);
      for (const tq of [11, 1]) {
        const qq = randn(rng, tq * c.QH * c.D);
        const got = seqs.map((s) => attend(s, 1, qq, c.D, { positions: 'rank' }));
        expectSameAsOneThread(got, `rank, tq ${tq}`);
        const n = seqs[2]!.length(1, 0);
        const want = reference(seqs[2]!, 1, c.KVH, c.D, c.QH, c.rope!, qq, (t) => n - tq + t, (row) => row);
        expectClose(got[2]!.out, want, { rel: 2e-5, abs: 2e-5 }, `rank, tq ${tq}, threads 3 against float64`);
      }
    });
  });

  it('errors are the same with threads', () => {
    const rng = testRng();
    const c = CASES[0]!;
    const codes = THREADS.map((t) => {
      using cache = new KVCache(options(c, t));
      const seq = cache.createSequence();
      seq.append(1, randn(rng, 40 * c.KVH * c.D), randn(rng, 40 * c.KVH * c.D));
      return [
        errorCode(() => seq.attention(1, randn(rng, c.QH * c.D + 1))),
        errorCode(() => seq.attention(1, randn(rng, 41 * c.QH * c.D))),
        errorCode(() => seq.attention(1, randn(rng, c.QH * c.D), { lse: new Float32Array(1) })),
      ];
    });
    expect(codes[0]).toEqual(['SHAPE_MISMATCH', 'SHAPE_MISMATCH', 'SHAPE_MISMATCH']);
    for (const c2 of codes) expect(c2).toEqual(codes[0]);
  });
});
