// Compaction (Attention Matching) of caches with `rope` (keys stored before RoPE), judged by a
// float64 reference that applies RoPE itself (test/reference/rope-reference.ts) on fresh
// random data: head_dim 64, GQA 2, 320 context rows at gapped positions, both pair styles.
//
// What must hold:
// - the kept rows are stored rows: their positions and (pre-RoPE) keys are the original ones,
//   and attention over the compacted stream equals float64 attention over the kept rows
//   rotated at their stored positions, with the fitted beta and values (1e-4 relative);
// - held-out queries: the compacted cache's output against float64 full attention over the
//   ORIGINAL rows with RoPE equals what the compaction itself reported (heldOutOutputError):
//   the fit really saw rotated logits (without the rotation the stage fits logits no query
//   gives, and the two disagree by far more than the tolerance);
// - compaction beats eviction to the same size on those held-out queries.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, KVCacheError, type Sequence, type Storage } from '../../lib/index';
import { attentionReference, type StreamRows } from '../reference/attention-reference';
import { relError } from '../reference/compare';
import { randn, testRng, type Rng } from '../reference/random';
import { gappedPositions, ropeF64, type RopeSpec } from '../reference/rope-reference';

const D = 64, KVH = 2, QH = 4, G = QH / KVH;
const T = 320;        // context rows
// Reference queries as self-study makes them: ROUNDS continuations of SPAN tokens right after
// the context (the same positions each round), recorded and rolled back, or given.
const ROUNDS = 4, SPAN = 48;
const PROBES = ROUNDS * SPAN;
const HELD_OUT = 48;  // held-out query tokens, from the references' distribution (at their positions)

interface Rows { keys: ArrayLike<number>; values: ArrayLike<number>; positions: ArrayLike<number>; beta?: ArrayLike<number> }

/**
 * Float64 attention of pre-RoPE queries [tq, QH, D] over pre-RoPE rows per kv head: RoPE at
 * the rows' stored positions (or rowPos), query token t at qpos (a number, or one per token).
 */
function ropeAttention(r: RopeSpec, rows: Rows[], queries: Float32Array, qpos: number | ArrayLike<number>, rowPos?: (row: number) => number): Float64Array {
  const tq = queries.length / (QH * D);
  const streams: StreamRows[] = rows.map((s) => {
    const n = s.positions.length;
    const keys = new Float64Array(n * D);
    for (let t = 0; t < n; t++) keys.set(ropeF64(s.keys, t * D, D, r, rowPos ? rowPos(t) : s.positions[t]!), t * D);
    // The causal mask needs positions in the same frame as the query position.
    const positions = rowPos ? Array.from({ length: n }, (_, t) => rowPos(t)) : s.positions;
    return { keys, values: s.values, positions, beta: s.beta };
  });
  const at = typeof qpos === 'number' ? Array<number>(tq).fill(qpos) : Array.from(qpos);
  const q = new Float64Array(queries.length);
  for (let i = 0; i < tq * QH; i++) q.set(ropeF64(queries, i * D, D, r, at[Math.floor(i / QH)]!), i * D);
  return attentionReference({ headDim: D, queryHeads: QH, streams, queries: q, queryPositions: rows.map(() => at) }).out;
}

/** ‖a − b‖ / ‖b‖ over the query heads of kv head h ([tq, QH, D] layouts). */
function headError(a: ArrayLike<number>, b: ArrayLike<number>, h: number): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length / D; i++) {
    if (Math.floor((i % QH) / G) !== h) continue;
    for (let d = 0; d < D; d++) {
      const x = a[i * D + d]!, y = b[i * D + d]!;
      num += (x - y) ** 2;
      den += y * y;
    }
  }
  return Math.sqrt(num / den);
}

/** The cache's output for held-out tokens, each decoded alone (at the last row's position). */
function decodeEach(seq: Sequence, queries: Float32Array): Float32Array {
  const out = new Float32Array(queries.length);
  const token = QH * D;
  for (let t = 0; t < queries.length / token; t++) out.set(seq.attention(0, queries.subarray(t * token, (t + 1) * token)), t * token);
  return out;
}

/** Queries that look alike (a direction per kv head plus noise), as a model's do. */
function alikeQueries(rng: Rng, dirs: Float32Array[], tokens: number): Float32Array {
  const q = randn(rng, tokens * QH * D, 0.4);
  for (let t = 0; t < tokens; t++) {
    for (let qh = 0; qh < QH; qh++) for (let d = 0; d < D; d++) q[(t * QH + qh) * D + d]! += dirs[Math.floor(qh / G)]![d]!;
  }
  return q;
}

function readAll(seq: Sequence) {
  return Array.from({ length: KVH }, (_, h) => seq.read(0, h));
}

interface World {
  cache: KVCache;
  seq: Sequence;
  positions: Int32Array;
  heldOut: Float32Array;
  given: Float32Array;
  givenPositions: Int32Array;
  heldOutPositions: Int32Array;
  rows: ReturnType<typeof readAll>;  // the context rows as stored (pre-RoPE), before compaction
}

/**
 * A rope cache holding T context rows; reference queries either recorded (a probe of PROBES
 * tokens after the context with recordQueries and accumulateScores, then truncated away:
 * the self-study flow) or returned for the caller to give.
 */
function world(rng: Rng, rope: RopeSpec, keys: Storage, values: Storage, record: boolean, lowRank = false): World {
  const cache = new KVCache({
    layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys, values, groupSize: 16, blockSize: 16, threads: 2,
    rope, queryReservoir: 4096, ...(lowRank ? { lowRank: { keys: 32, values: 32, calibrationRows: 128 } } : {}),
  });
  const seq = cache.createSequence();
  const positions = gappedPositions(rng, 5, T + SPAN);
  const context = positions.subarray(0, T);
  const probePositions = Int32Array.from({ length: PROBES }, (_, i) => positions[T + (i % SPAN)]!);
  // Keys with a low-rank part (as pre-RoPE keys are) plus noise; values Gaussian.
  const basis = randn(rng, 16 * D, 1 / 4);
  const k = randn(rng, T * KVH * D, 0.5);
  for (let i = 0; i < T * KVH; i++) {
    const c = randn(rng, 16);
    for (let j = 0; j < 16; j++) for (let d = 0; d < D; d++) k[i * D + d]! += c[j]! * basis[j * D + d]! * 2;
  }
  seq.append(0, k, randn(rng, T * KVH * D), { positions: context });
  const dirs = Array.from({ length: KVH }, () => randn(rng, D, 1.0));
  const probe = alikeQueries(rng, dirs, PROBES);
  if (record) {
    for (let r = 0; r < ROUNDS; r++) {
      seq.append(0, randn(rng, SPAN * KVH * D), randn(rng, SPAN * KVH * D), { positions: positions.subarray(T) });
      seq.attention(0, probe.subarray(r * SPAN * QH * D, (r + 1) * SPAN * QH * D), { recordQueries: true, accumulateScores: true });
      seq.truncate(positions[T]!);
    }
  }
  expect(seq.length(0, 0)).toBe(T);
  return {
    cache, seq, positions, heldOut: alikeQueries(rng, dirs, HELD_OUT), given: probe, givenPositions: probePositions,
    heldOutPositions: probePositions.slice(0, HELD_OUT),
    rows: readAll(seq),
  };
}

const CASES: { keys: Storage; values: Storage; style: RopeSpec['style']; record: boolean; exact: boolean }[] = [
  { keys: 'f32', values: 'f32', style: 'interleaved', record: false, exact: true },
  { keys: 'f32', values: 'f32', style: 'half', record: true, exact: true },
  { keys: 'f16', values: 'f16', style: 'half', record: false, exact: false },
  { keys: 'int8', values: 'f16', style: 'interleaved', record: true, exact: false },
  { keys: 'int4', values: 'int8', style: 'half', record: true, exact: false },
];

describe('rope: compaction fits the rotated logits and keeps the stored pre-RoPE rows', () => {
  for (const c of CASES) {
    it(`${c.keys} keys, ${c.values} values, ${c.style}, ${c.record ? 'recorded' : 'given'} queries, ratio 0.25`, async () => {
      const rng = testRng();
      const rope: RopeSpec = { theta: 10000, dims: D, style: c.style };
      const w = world(rng, rope, c.keys, c.values, c.record);
      try {
        const last = w.positions[T - 1]!;
        if (c.record) {
          const log = w.seq.recordedQueries(0, 1);
          expect(Array.from(log.reservoirPositions!)).toEqual(Array.from(w.givenPositions).flatMap((p) => [p, p]));
        }
        // Eviction to the same size, on a fork (H2O by the probe's attention mass, or key norm).
        const evicted = w.seq.fork();
        evicted.evict(c.record ? EvictionPolicy.h2o({ sinks: 4, recent: 32 }) : EvictionPolicy.keyNorm({ sinks: 4, recent: 32 }), { ratio: 0.25 });
        const report = await new Compactor({ ratio: 0.25, method: 'omp' }).compact(w.seq, {
          ...(c.record ? {} : { queries: [w.given], queryPositions: [w.givenPositions] }),
          heldOutQueries: [w.heldOut], heldOutPositions: [w.heldOutPositions],
        });
        expect(report.rowsAfter).toBe(2 * Math.ceil(0.25 * T));
        for (let h = 0; h < KVH; h++) expect(evicted.length(0, h)).toBe(w.seq.length(0, h));

        // Kept rows: stored positions and keys bit-exact, beta and values fitted.
        const after = readAll(w.seq);
        for (let h = 0; h < KVH; h++) {
          const a = after[h]!, before = w.rows[h]!;
          let j = 0;
          for (let i = 0; i < a.positions.length; i++) {
            while (before.positions[j]! < a.positions[i]!) j++;
            expect(before.positions[j], `kv head ${h} row ${i}: a stored position`).toBe(a.positions[i]);
            expect(Array.from(a.keys.subarray(i * D, (i + 1) * D))).toEqual(Array.from(before.keys.subarray(j * D, (j + 1) * D)));
          }
          expect(a.beta.some((b) => b !== 0), 'beta fitted').toBe(true);
        }
        // Attention over the compacted stream = float64 over the kept rows at their stored positions.
        const fresh = alikeQueries(rng, [randn(rng, D, 1.0), randn(rng, D, 1.0)], 2);
        for (let t = 0; t < 2; t++) {
          const q = fresh.subarray(t * QH * D, (t + 1) * QH * D);
          expect(relError(w.seq.attention(0, q), ropeAttention(rope, after, q, last)), 'kept rows at stored positions').toBeLessThan(1e-4);
          // positions: 'rank' re-indexes the kept rows by their new row index, as after eviction.
          const n = after[0]!.positions.length;
          expect(relError(w.seq.attention(0, q, { positions: 'rank' }), ropeAttention(rope, after, q, n - 1, (row) => row)), 'rank').toBeLessThan(1e-4);
        }

        // Held-out queries (at the references' positions) against float64 full attention over
        // the original rows with RoPE. The compacted (evicted) stream's output for them is the
        // float64 attention over its rows as stored, which the cache reproduces to 1e-4 above.
        const full = ropeAttention(rope, w.rows, w.heldOut, w.heldOutPositions);
        const compacted = ropeAttention(rope, after, w.heldOut, w.heldOutPositions);
        const evictedOut = ropeAttention(rope, readAll(evicted), w.heldOut, w.heldOutPositions);
        // The cache itself, decoding held-out tokens at the last row's position.
        expect(relError(decodeEach(w.seq, w.heldOut), ropeAttention(rope, after, w.heldOut, last))).toBeLessThan(1e-4);
        let sumCompacted = 0, sumEvicted = 0;
        for (let h = 0; h < KVH; h++) {
          const measured = headError(compacted, full, h);
          const reported = report.streams.find((s) => s.kvHead === h)!.heldOutOutputError!;
          // Stored f32 values: only the fit's own rounding separates the two; other formats
          // also round the fitted values when they are written.
          const tol = c.exact ? 1e-3 * reported + 1e-5 : 0.02 * reported + 2e-3;
          expect(Math.abs(measured - reported), `kv head ${h}: measured ${measured} vs reported ${reported}`).toBeLessThan(tol);
          sumCompacted += measured;
          sumEvicted += headError(evictedOut, full, h);
        }
        // Summed over the kv heads. Key norm sees no queries: compaction has 0.17-0.30 of its
        // error (4 seeds). H2O sees the same recorded queries: usually 0.64-0.81, but with int4
        // keys on some fresh draws the two are level (0.995 seen), so it only must not be worse.
        // The rotation itself is held by the measured-vs-reported check above (without it the
        // measured error is 5-15x the reported one).
        expect(sumCompacted, `compaction ${sumCompacted} vs eviction ${sumEvicted}`).toBeLessThan((c.record ? 1.1 : 0.6) * sumEvicted);
      } finally {
        w.cache.dispose();
      }
    });
  }

  it('lowRank + rope (pre-RoPE low-rank keys): kept coefficient rows, fitted values in coefficient space', async () => {
    const rng = testRng();
    const rope: RopeSpec = { theta: 10000, dims: D, style: 'interleaved' };
    const w = world(rng, rope, 'f16', 'f16', true, true);
    try {
      const last = w.positions[T - 1]!;
      const log = w.seq.recordedQueries(0, 0);
      expect(log.reservoir.length).toBe(PROBES * G * D);  // whole queries, not projected
      const evicted = w.seq.fork();
      evicted.evict(EvictionPolicy.h2o({ sinks: 4, recent: 32 }), { ratio: 0.25 });
      const report = await new Compactor({ ratio: 0.25, method: 'omp' }).compact(w.seq, {
        heldOutQueries: [w.heldOut], heldOutPositions: [w.heldOutPositions],
      });
      const after = readAll(w.seq);
      for (let h = 0; h < KVH; h++) expect(after[h]!.positions.length).toBe(Math.ceil(0.25 * T));
      const q = alikeQueries(rng, [randn(rng, D, 1.0), randn(rng, D, 1.0)], 1);
      expect(relError(w.seq.attention(0, q), ropeAttention(rope, after, q, last)), 'kept rows at stored positions').toBeLessThan(1e-4);
      // The reference of the diagnostics is the low-rank cache's own attention (its stored rows).
      const full = ropeAttention(rope, w.rows, w.heldOut, w.heldOutPositions);
      const compacted = ropeAttention(rope, after, w.heldOut, w.heldOutPositions);
      const evictedOut = ropeAttention(rope, readAll(evicted), w.heldOut, w.heldOutPositions);
      let sumCompacted = 0, sumEvicted = 0;
      for (let h = 0; h < KVH; h++) {
        const measured = headError(compacted, full, h);
        const reported = report.streams.find((s) => s.kvHead === h)!.heldOutOutputError!;
        expect(Math.abs(measured - reported), `kv head ${h}: measured ${measured} vs reported ${reported}`).toBeLessThan(0.02 * reported + 2e-3);
        sumCompacted += measured;
        sumEvicted += headError(evictedOut, full, h);
      }
      // Measured over 4 seeds: 0.65-0.82 of H2O's error.
      expect(sumCompacted, `compaction ${sumCompacted} vs eviction ${sumEvicted}`).toBeLessThan(0.95 * sumEvicted);
    } finally {
      w.cache.dispose();
    }
  });

  it('online compaction (maybeCompact) of a rope cache keeps stored positions', () => {
    const rng = testRng();
    const rope: RopeSpec = { theta: 10000, dims: D, style: 'half' };
    const w = world(rng, rope, 'f16', 'f16', true);
    try {
      const compactor = new Compactor({ ratio: 0.5, online: { maxRows: 200 }, protect: { sinks: 4, recent: 32 } });
      const r = compactor.maybeCompact(w.seq);
      expect(r).not.toBeNull();
      expect(w.seq.length(0, 0)).toBe(36 + Math.ceil(0.5 * (T - 36)));
      const after = readAll(w.seq);
      const last = w.positions[T - 1]!;
      expect(after[0]!.positions[after[0]!.positions.length - 1]).toBe(last);
      const q = randn(rng, QH * D);
      expect(relError(w.seq.attention(0, q), ropeAttention(rope, after, q, last))).toBeLessThan(1e-4);
    } finally {
      w.cache.dispose();
    }
  });
});

describe('rope compaction in background maintenance', () => {
  it('cache.maintain() with a Compactor keeps a decoding rope cache under its target; rows keep their positions', async () => {
    const rng = testRng();
    const rope: RopeSpec = { theta: 10000, dims: D, style: 'interleaved' };
    const cache = new KVCache({ layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys: 'f16', values: 'f16', blockSize: 16, rope, threads: 1 });
    try {
      const seq = cache.createSequence();
      const maxBytes = KVH * 8 * cache.stats().blockBytes;  // 128 rows per stream
      const m = cache.maintain(seq, { maxBytes, policy: new Compactor({ ratio: 0.5 }), keepRecent: 16, sinks: 2, headroom: 0.25 });
      let passes = 0;
      m.on('pass', () => passes++);
      m.on('error', (e) => expect.fail(String(e)));
      const dir = randn(rng, D, 1.0);
      for (let t = 0; t < 300; t++) {
        seq.append(0, randn(rng, KVH * D), randn(rng, KVH * D));
        seq.attention(0, randn(rng, QH * D, 0.4).map((x, i) => x + dir[i % D]!), { recordQueries: true });
        if (t % 8 === 0) await new Promise((r) => setImmediate(r));
      }
      await m.idle();
      await m.stop();
      expect(passes).toBeGreaterThanOrEqual(1);
      const rows = readAll(seq);
      for (const r of rows) {
        expect(r.positions.length).toBeLessThan(300);
        expect(r.positions[r.positions.length - 1]).toBe(299);
        for (let i = 1; i < r.positions.length; i++) expect(r.positions[i]!).toBeGreaterThan(r.positions[i - 1]!);
      }
      const q = randn(rng, QH * D);
      expect(relError(seq.attention(0, q), ropeAttention(rope, rows, q, 299))).toBeLessThan(1e-4);
    } finally {
      cache.dispose();
    }
  });
});

describe('rope compaction: bad inputs are typed errors and leave the cache unchanged', () => {
  it('queryPositions / heldOutPositions shapes, types, values; positions without rope', async () => {
    const rng = testRng();
    const w = world(rng, { theta: 10000, dims: D, style: 'interleaved' }, 'f16', 'f16', false);
    const plain = new KVCache({ layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH });
    try {
      const before = w.seq.export();
      const c = new Compactor({ ratio: 0.25 });
      const code = async (o: object) => {
        try {
          await c.compact(w.seq, o);
        } catch (e) {
          if (e instanceof KVCacheError) return e.code;
          throw e;
        }
        return 'no error';
      };
      const q = [w.given];
      expect(await code({ queries: q, queryPositions: [w.givenPositions.subarray(1)] })).toBe('SHAPE_MISMATCH');
      expect(await code({ queries: q, queryPositions: [w.givenPositions, w.givenPositions] })).toBe('INVALID_ARGUMENT');
      expect(await code({ queries: q, queryPositions: [Float32Array.from(w.givenPositions)] })).toBe('INVALID_ARGUMENT');
      expect(await code({ queries: q, queryPositions: [Int32Array.from(w.givenPositions, (p, i) => (i === 3 ? -1 : p))] })).toBe('INVALID_ARGUMENT');
      expect(await code({ queries: q, queryPositions: w.givenPositions })).toBe('INVALID_ARGUMENT');
      expect(await code({ queryPositions: [w.givenPositions] })).toBe('SHAPE_MISMATCH');  // no given queries for them
      expect(await code({ queries: [w.given.subarray(1)] })).toBe('SHAPE_MISMATCH');
      expect(await code({ heldOutQueries: [w.heldOut], heldOutPositions: [w.givenPositions] })).toBe('SHAPE_MISMATCH');
      expect(Buffer.from(w.seq.export()).equals(Buffer.from(before)), 'unchanged').toBe(true);
      const ps = plain.createSequence();
      ps.append(0, randn(rng, 40 * KVH * D), randn(rng, 40 * KVH * D));
      await expect(c.compact(ps, { queries: [randn(rng, 4 * QH * D)], queryPositions: [new Int32Array(4)] }))
        .rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(ps.length(0, 0)).toBe(40);
    } finally {
      w.cache.dispose();
      plain.dispose();
    }
  });

  it('a pool with no room for the f32 stage: OUT_OF_MEMORY, the sequence and the pool as before', async () => {
    const rng = testRng();
    // f16 rows, 16 per block: 2 x 20 blocks hold the 320 rows; the f32 stage needs 2 x 40 more.
    const opts = { layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, blockSize: 16, rope: { theta: 10000 } } as const;
    const probe = new KVCache(opts);
    const slot = probe.stats().blockBytes;
    probe.dispose();
    const cache = new KVCache({ ...opts, maxBytes: 60 * slot });
    try {
      const seq = cache.createSequence();
      seq.append(0, randn(rng, T * KVH * D), randn(rng, T * KVH * D));
      seq.attention(0, randn(rng, 8 * QH * D), { recordQueries: true });
      const before = seq.export();
      const used = cache.stats().blocksUsed;
      await expect(new Compactor({ ratio: 0.25 }).compact(seq)).rejects.toMatchObject({ code: 'OUT_OF_MEMORY' });
      expect(Buffer.from(seq.export()).equals(Buffer.from(before))).toBe(true);
      expect(cache.stats().blocksUsed).toBe(used);
    } finally {
      cache.dispose();
    }
  });
});
