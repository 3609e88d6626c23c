// Cache option `rope`: keys (and queries) arrive before RoPE and the cache rotates them by
// position inside attention. Judged against a float64 reference that applies RoPE itself
// (an independent implementation of the rotation) and then runs plain causal GQA attention,
// on fresh random data: stored positions with gaps and large values (every level of the
// kernels' angle tables), both pair styles, partial rotary dims, prefill and decode, every
// storage format, positions re-indexed by rank after eviction, and export / import.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, KVCacheError, type KVCacheOptions, type Sequence } from '../../lib/index';
import { attentionReference, type StreamRows } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { gappedPositions, ropeF64, type RopeSpec } from '../reference/rope-reference';

/** Reference attention of pre-RoPE rows and queries: RoPE by the given positions, then plain attention. */
function ropeReference(
  D: number, QH: number, r: RopeSpec, rows: { keys: Float32Array; values: Float32Array; positions: Int32Array; beta?: Float32Array }[],
  queries: Float32Array, ropePos: (kvHead: number, t: number) => number, rowPos: (kvHead: number, row: number) => number,
): Float64Array {
  const KVH = rows.length;
  const g = QH / KVH;
  const tq = queries.length / (QH * D);
  const streams: StreamRows[] = rows.map((s, h) => {
    const T = s.positions.length;
    const keys = new Float64Array(T * D);
    for (let t = 0; t < T; t++) keys.set(ropeF64(s.keys, t * D, D, r, rowPos(h, t)), t * D);
    return { keys, values: s.values, positions: s.positions, beta: s.beta };
  });
  const q = new Float64Array(queries.length);
  for (let t = 0; t < tq; t++) {
    for (let qh = 0; qh < QH; qh++) {
      const off = (t * QH + qh) * D;
      q.set(ropeF64(queries, off, D, r, ropePos(Math.floor(qh / g), t)), off);
    }
  }
  return attentionReference({ headDim: D, queryHeads: QH, streams, queries: q }).out;
}

function readAll(seq: Sequence, layer: number, kvHeads: number) {
  return Array.from({ length: kvHeads }, (_, h) => seq.read(layer, h));
}

const CASES: { name: string; D: number; KVH: number; QH: number; rope: RopeSpec; start: number; keys: KVCacheOptions['keys'] }[] = [
  { name: 'interleaved, D 64, GQA 2, f32, positions from 0', D: 64, KVH: 2, QH: 4, rope: { theta: 10000, dims: 64, style: 'interleaved' }, start: 0, keys: 'f32' },
  { name: 'half, D 128, GQA 4, f16, positions around 70,000', D: 128, KVH: 2, QH: 8, rope: { theta: 500000, dims: 128, style: 'half' }, start: 70000, keys: 'f16' },
  { name: 'interleaved, partial dims 16 of 32, int8, positions around 2^30', D: 32, KVH: 1, QH: 3, rope: { theta: 10000, dims: 16, style: 'interleaved' }, start: 2 ** 30 + 12345, keys: 'int8' },
  { name: 'half, partial dims 8 of 8+16, bf16, D 24', D: 24, KVH: 3, QH: 3, rope: { theta: 1000, dims: 8, style: 'half' }, start: 300, keys: 'bf16' },
  { name: 'interleaved, D 8, int4 (head_dim of stories260K)', D: 8, KVH: 4, QH: 8, rope: { theta: 10000, dims: 8, style: 'interleaved' }, start: 5, keys: 'int4' },
];

describe('rope: attention over pre-RoPE keys against a float64 reference', () => {
  for (const c of CASES) {
    it(`${c.name}: prefill (causal) and decode`, () => {
      const rng = testRng();
      const T = 37 + rng.int(0, 60);
      const tq = 5;
      const cache = new KVCache({
        layers: 2, kvHeads: c.KVH, headDim: c.D, queryHeads: c.QH, keys: c.keys, values: 'f32', blockSize: 16,
        groupSize: Math.min(8, c.D), rope: c.rope, threads: 2,
      });
      try {
        const seq = cache.createSequence();
        const positions = gappedPositions(rng, c.start, T);
        for (const layer of [0, 1]) {
          seq.append(layer, randn(rng, T * c.KVH * c.D), randn(rng, T * c.KVH * c.D), { positions });
        }
        const layer = 1;
        // Reference from the rows as stored (dequantized, still pre-RoPE): isolates the rotation.
        const rows = readAll(seq, layer, c.KVH);
        for (const queryTokens of [tq, 1]) {
          const queries = randn(rng, queryTokens * c.QH * c.D);
          const out = seq.attention(layer, queries);
          const expected = ropeReference(
            c.D, c.QH, c.rope, rows, queries,
            (_h, t) => positions[T - queryTokens + t]!, (_h, row) => rows[0]!.positions[row]!,
          );
          expectClose(out, expected, { rel: 2e-5, abs: 2e-5 }, `${c.name}, tq ${queryTokens}`);
        }
      } finally {
        cache.dispose();
      }
    });
  }

  it('equals a cache without rope that is given post-RoPE keys and queries', () => {
    const rng = testRng();
    const D = 64, KVH = 2, QH = 4, T = 90;
    const r: RopeSpec = { theta: 10000, dims: D, style: 'interleaved' };
    const positions = gappedPositions(rng, 3, T);
    const keys = randn(rng, T * KVH * D), values = randn(rng, T * KVH * D), queries = randn(rng, 4 * QH * D);
    const post = (x: Float32Array, heads: number, pos: (t: number) => number) => {
      const y = new Float32Array(x.length);
      for (let i = 0; i < x.length / D; i++) y.set(ropeF64(x, i * D, D, r, pos(Math.floor(i / heads))), i * D);
      return y;
    };
    const opts = { layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys: 'f32', values: 'f32', threads: 1 } as const;
    const withRope = new KVCache({ ...opts, rope: { theta: 10000 } });
    const plain = new KVCache(opts);
    try {
      const a = withRope.createSequence();
      a.append(0, keys, values, { positions });
      const b = plain.createSequence();
      b.append(0, post(keys, KVH, (t) => positions[t]!), values, { positions });
      const got = a.attention(0, queries);
      const want = b.attention(0, post(queries, QH, (t) => positions[T - 4 + t]!));
      expectClose(got, want, { rel: 1e-5, abs: 1e-5 }, 'rope cache vs post-RoPE plain cache');
    } finally {
      withRope.dispose();
      plain.dispose();
    }
  });
});

describe('rope: positions re-indexed by rank (StreamingLLM positions inside the cache)', () => {
  it('after eviction, rows and queries are rotated by their row index; stored positions by default', () => {
    const rng = testRng();
    const D = 32, KVH = 2, QH = 4, T = 120;
    const r: RopeSpec = { theta: 10000, dims: D, style: 'interleaved' };
    const cache = new KVCache({ layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys: 'f16', values: 'f16', rope: r, threads: 2 });
    try {
      const seq = cache.createSequence();
      seq.append(0, randn(rng, T * KVH * D), randn(rng, T * KVH * D));
      seq.evict(EvictionPolicy.streamingLLM({ sinks: 4, window: 40 }), { keep: 44 });
      // Three more tokens after the eviction: stored positions continue at T, ranks at 44.
      seq.append(0, randn(rng, 3 * KVH * D), randn(rng, 3 * KVH * D));
      const rows = readAll(seq, 0, KVH);
      const n = rows[0]!.positions.length;
      expect(n).toBe(47);
      expect(rows[0]!.positions[n - 1]).toBe(T + 2);
      const tq = 3;
      const queries = randn(rng, tq * QH * D);
      const rank = seq.attention(0, queries, { positions: 'rank' });
      const stored = seq.attention(0, queries, { positions: 'stored' });
      const byRank = ropeReference(D, QH, r, rows, queries, (_h, t) => n - tq + t, (_h, row) => row);
      const byStored = ropeReference(D, QH, r, rows, queries, (_h, t) => rows[0]!.positions[n - tq + t]!, (_h, row) => rows[0]!.positions[row]!);
      expectClose(rank, byRank, { rel: 2e-5, abs: 2e-5 }, 'rank positions');
      expectClose(stored, byStored, { rel: 2e-5, abs: 2e-5 }, 'stored positions');
      expectClose(seq.attention(0, queries), byStored, { rel: 2e-5, abs: 2e-5 }, 'default = stored');
      // The two really differ here (a gap of 76 positions), so the test can tell them apart.
      let diff = 0;
      for (let i = 0; i < rank.length; i++) diff = Math.max(diff, Math.abs(rank[i]! - stored[i]!));
      expect(diff).toBeGreaterThan(1e-2);
    } finally {
      cache.dispose();
    }
  });
});

describe('rope: options, errors and export / import', () => {
  const base = { layers: 1, kvHeads: 1, headDim: 16, keys: 'f16', values: 'f16', threads: 1 } as const;
  const code = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      if (e instanceof KVCacheError) return e.code;
      throw e;
    }
    return 'no error';
  };

  it('resolves defaults and rejects bad rope options with INVALID_ARGUMENT', () => {
    const cache = new KVCache({ ...base, rope: { theta: 10000 } });
    expect(cache.config.rope).toEqual({ theta: 10000, dims: 16, style: 'interleaved' });
    cache.dispose();
    const plain = new KVCache(base);
    expect(plain.config.rope).toBeNull();
    const seq = plain.createSequence();
    seq.append(0, new Float32Array(16).fill(0.5), new Float32Array(16).fill(0.25));
    expect(code(() => seq.attention(0, new Float32Array(16).fill(1), { positions: 'rank' }))).toBe('INVALID_ARGUMENT');
    expect(code(() => seq.attention(0, new Float32Array(16).fill(1), { positions: 'first' as never }))).toBe('INVALID_ARGUMENT');
    plain.dispose();
    for (const rope of [{}, { theta: 0 }, { theta: -1 }, { theta: NaN }, { theta: 10000, dims: 7 }, { theta: 10000, dims: 18 },
      { theta: 10000, style: 'neox' }, { theta: 10000, extra: 1 }]) {
      expect(code(() => new KVCache({ ...base, rope: rope as never })), JSON.stringify(rope)).toBe('INVALID_ARGUMENT');
    }
    expect(code(() => new KVCache({ ...base, rotate: true, rope: { theta: 10000 } }))).toBe('INVALID_ARGUMENT');
  });

  it("sparse decode with positions: 'rank' says UNSUPPORTED instead of ignoring RoPE; compaction, query-scored eviction and sparse decode work", async () => {
    const rng = testRng();
    const cache = new KVCache({ ...base, rope: { theta: 10000 }, queryHeads: 1 });
    try {
      const seq = cache.createSequence();
      seq.append(0, randn(rng, 40 * 16), randn(rng, 40 * 16));
      seq.attention(0, randn(rng, 16), { recordQueries: true, accumulateScores: true });
      // Compaction rotates its reference queries and keys (rope-compaction.test.ts); it runs
      // on a fork here so the checks below see the 40 rows.
      const fork = seq.fork();
      await expect(new Compactor({ ratio: 0.5, protect: { sinks: 1, recent: 4 } }).compact(fork)).resolves.toMatchObject({ rowsAfter: 20 });
      fork.free();
      // tova rotates the recorded queries and keys (rope-eviction.test.ts); on a fork too
      const fork2 = seq.fork();
      fork2.evict(EvictionPolicy.tova({ sinks: 1, recent: 4 }), { ratio: 0.5 });
      expect(fork2.length(0, 0)).toBe(20);
      fork2.free();
      const summarized = new KVCache({ ...base, rope: { theta: 10000 }, keySummaries: true });
      try {
        const s2 = summarized.createSequence();
        s2.append(0, randn(rng, 40 * 16), randn(rng, 40 * 16));
        // Summaries hold keys after RoPE at stored positions (test/sparse/sparse-rope.test.ts);
        // re-indexed positions would move every key out of them.
        expect(code(() => s2.attention(0, randn(rng, 16), { sparse: { tokens: 16 }, positions: 'rank' }))).toBe('UNSUPPORTED');
        expect(s2.attention(0, randn(rng, 16), { sparse: { tokens: 16 } }).length).toBe(16);
      } finally {
        summarized.dispose();
      }
      // Rotation-invariant or query-free scores work.
      seq.evict(EvictionPolicy.keyNorm({ sinks: 1, recent: 4 }), { ratio: 0.75 });
      seq.evict(EvictionPolicy.h2o({ sinks: 1, recent: 4 }), { ratio: 0.5 });
      expect(seq.length(0, 0)).toBe(15);
    } finally {
      cache.dispose();
    }
  });

  it('export carries the rope options (format version 3); a cache without rope writes version 2', () => {
    const rng = testRng();
    const opts = { ...base, layers: 2, kvHeads: 2, queryHeads: 4, headDim: 32 } as const;
    const rope = { theta: 10000, dims: 24, style: 'half' } as const;
    const a = new KVCache({ ...opts, rope });
    const b = new KVCache({ ...opts, rope });
    const plain = new KVCache(opts);
    const other = new KVCache({ ...opts, rope: { ...rope, theta: 500000 } });
    try {
      const seq = a.createSequence();
      for (const l of [0, 1]) seq.append(l, randn(rng, 50 * 2 * 32), randn(rng, 50 * 2 * 32), { positions: gappedPositions(rng, 9, 50) });
      const bytes = seq.export();
      expect(new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true)).toBe(3);
      const again = b.importSequence(bytes);
      const q = randn(rng, 2 * 4 * 32);
      expect(Array.from(again.attention(1, q))).toEqual(Array.from(seq.attention(1, q)));
      expect(Array.from(again.export())).toEqual(Array.from(bytes));
      expect(code(() => plain.importSequence(bytes))).toBe('INVALID_ARGUMENT');
      expect(code(() => other.importSequence(bytes))).toBe('INVALID_ARGUMENT');

      const v2 = plain.createSequence();
      v2.append(0, randn(rng, 8 * 2 * 32), randn(rng, 8 * 2 * 32));
      const oldBytes = v2.export();
      expect(new DataView(oldBytes.buffer, oldBytes.byteOffset).getUint32(8, true)).toBe(2);
      expect(code(() => b.importSequence(oldBytes))).toBe('INVALID_ARGUMENT'); // post-RoPE keys
      const plain2 = new KVCache(opts);
      try {
        expect(plain2.importSequence(oldBytes).length(0, 1)).toBe(8);
      } finally {
        plain2.dispose();
      }
    } finally {
      a.dispose();
      b.dispose();
      plain.dispose();
      other.dispose();
    }
  });
});
