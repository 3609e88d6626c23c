// Eviction and compaction of tiered caches (cpp/core/tiers/tier_rebuild.cpp). A tiered
// stream is scored, selected and compacted as its "staged" copy: every row in the top tier's
// format (aged rows decoded once and re-encoded). So the reference is a twin: a plain cache of
// the top tier's format holding the tiered rows (decoded, then appended); the same policy or
// compactor on the twin must keep the same rows, and the tiered result must equal the twin's
// result re-tiered: the lowest tier's whole blocks hold the twin's oldest rows encoded in that
// tier's format (bit for bit the plain encoder of that format), the rows aging put in the
// middle tiers likewise, and tier 0 the twin's rows bit for bit. Then fork, truncate and
// export/import keep working on the rebuilt streams.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { type StreamRows, attentionReference } from '../reference/attention-reference';
import { expectBitExact, expectClose, expectIntsEqual } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { selectRows } from '../eviction/reference';
import { outputTol } from '../foundation/attention-tolerance';

type Tier = { rows?: number; keys: Storage; values: Storage };

const shape = { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, blockSize: 8, threads: 1 };
const TWO: Tier[] = [{ rows: 8, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int4' }];
const THREE: Tier[] = [{ rows: 8, keys: 'f32', values: 'f32' }, { rows: 64, keys: 'f16', values: 'f16' }, { keys: 'int4', values: 'int4' }];

/** A tiered cache and a sequence of T rows per stream (in chunks, so rows age as they come), with recorded queries and mass. */
function filledTiered(tiers: Tier[], T: number, salt: string, extra: Partial<KVCacheOptions> = {}): Sequence {
  const cache = new KVCache({ ...shape, ...extra, tiers });
  const c = cache.config;
  const seq = cache.createSequence();
  const rng = testRng(salt);
  for (let done = 0; done < T;) {
    const n = Math.min(T - done, 13);
    for (let l = 0; l < c.layers; l++) seq.append(l, randn(rng, n * c.kvHeads * c.headDim), randn(rng, n * c.kvHeads * c.headDim));
    done += n;
  }
  for (let l = 0; l < c.layers; l++) {
    for (let k = 0; k < 3; k++) seq.attention(l, randn(rng, 2 * c.queryHeads * c.headDim, 2), { accumulateScores: true, recordQueries: true });
  }
  return seq;
}

/** All heads' rows [0, n) of a layer as [n, kvHeads, D] (every head of `seq` has the same positions). */
function layerRows(seq: Sequence, layer: number): { keys: Float32Array; values: Float32Array; positions: Int32Array } {
  const c = seq.cache.config;
  const D = c.headDim, H = c.kvHeads, n = seq.length(layer, 0);
  const keys = new Float32Array(n * H * D), values = new Float32Array(n * H * D);
  let positions: Int32Array = new Int32Array(0);
  for (let h = 0; h < H; h++) {
    const r = seq.read(layer, h);
    for (let t = 0; t < n; t++) {
      keys.set(r.keys.subarray(t * D, (t + 1) * D), (t * H + h) * D);
      values.set(r.values.subarray(t * D, (t + 1) * D), (t * H + h) * D);
    }
    positions = r.positions;
  }
  return { keys, values, positions };
}

/** The twin: a plain cache of the top tier's format holding `seq`'s rows, with the same attention history replayed. */
function twinOf(seq: Sequence, tiers: Tier[], extra: Partial<KVCacheOptions>, salt: string): Sequence {
  const c = seq.cache.config;
  const twin = new KVCache({ ...shape, ...extra, keys: tiers[0]!.keys, values: tiers[0]!.values }).createSequence();
  for (let l = 0; l < c.layers; l++) {
    const r = layerRows(seq, l);
    twin.append(l, r.keys, r.values, { positions: r.positions });
  }
  // The same queries as filledTiered (its rng after the rows): the same recorded queries.
  const rng = testRng(salt);
  const T = seq.length(0, 0);
  for (let done = 0; done < T;) {
    const n = Math.min(T - done, 13);
    for (let l = 0; l < c.layers; l++) {
      randn(rng, n * c.kvHeads * c.headDim);
      randn(rng, n * c.kvHeads * c.headDim);
    }
    done += n;
  }
  for (let l = 0; l < c.layers; l++) {
    for (let k = 0; k < 3; k++) twin.attention(l, randn(rng, 2 * c.queryHeads * c.headDim, 2), { recordQueries: true });
  }
  return twin;
}

/** Rows per tier of one stream after aging from `rows` (the C++ rule: whole blocks of the next tier past the window). */
function aged(rows: number[], windows: number[], rpb: number[]): number[] {
  const out = rows.slice();
  for (let k = 0; k + 1 < rpb.length; k++) {
    const spare = out[k]! - windows[k]!;
    const n = spare >= rpb[k + 1]! ? Math.floor(spare / rpb[k + 1]!) : 0;
    out[k]! -= n * rpb[k + 1]!;
    out[k + 1]! += n * rpb[k + 1]!;
  }
  return out;
}

/** `rows` (decoded) encoded by a plain one-head cache of format `t`, decoded again. */
function encoded(rows: { keys: Float32Array; values: Float32Array; positions: Int32Array }, t: Tier, extra: Partial<KVCacheOptions>) {
  const cache = new KVCache({ ...shape, ...extra, layers: 1, kvHeads: 1, queryHeads: 1, keys: t.keys, values: t.values });
  const s = cache.createSequence();
  s.append(0, rows.keys, rows.values, { positions: rows.positions });
  const r = s.read(0, 0);
  cache.dispose();
  return r;
}

/**
 * Checks every stream of `seq` (tiered, after eviction or compaction) against the twin's
 * result: oldAged[i] = rows of stream i in aged tiers before, keptFrom[i] = the old row
 * indices the result kept (positions for eviction).
 */
function checkRetiered(seq: Sequence, twin: Sequence, tiers: Tier[], oldAged: number, extra: Partial<KVCacheOptions>, label: string,
  before?: { keys: Float32Array; values: Float32Array }[]): void {
  const c = seq.cache.config;
  const D = c.headDim;
  const rpb = seq.cache.stats().tiers!.map((t) => t.rowsPerBlock);
  const L = tiers.length - 1;
  let tierTotals = new Array<number>(tiers.length).fill(0);
  for (let l = 0; l < c.layers; l++) {
    for (let h = 0; h < c.kvHeads; h++) {
      const want = twin.read(l, h);
      const got = seq.read(l, h);
      const n = want.positions.length;
      expect(got.positions.length, `${label} ${l}/${h} length`).toBe(n);
      expectIntsEqual(got.positions, want.positions, `${label} ${l}/${h} positions`);
      expectBitExact(got.beta, want.beta, `${label} ${l}/${h} beta`);
      // Rows kept from the old tier-0 run stay in tier 0; the lowest tier takes whole blocks of the rest.
      const keptOld = Array.from(want.positions).filter((p) => p < oldAged).length;
      const q = Math.floor(keptOld / rpb[L]!) * rpb[L]!;
      const start = new Array<number>(tiers.length).fill(0);
      start[0] = n - q;
      start[L] = q;
      // Tier 0 ages at the next append, not during the rebuild.
      const per = start;
      tierTotals = tierTotals.map((v, k) => v + per[k]!);
      let at = 0;
      for (let k = L; k >= 0; k--) {
        const a = at, b = at + per[k]!;
        at = b;
        if (a === b) continue;
        const slice = { keys: want.keys.slice(a * D, b * D), values: want.values.slice(a * D, b * D), positions: want.positions.slice(a, b) };
        if (before) {
          // Rotated: the twin re-rotates decoded rows (f32 rounding); the tiered stream keeps
          // the stored bits of its old tier-0 rows, which read back as they did before (and
          // age from there).
          const old = before[l * c.kvHeads + h]!;
          for (let t = a; t < b; t++) {
            const p = got.positions[t]!;
            if (p < oldAged) continue;
            slice.keys.set(old.keys.subarray(p * D, (p + 1) * D), (t - a) * D);
            slice.values.set(old.values.subarray(p * D, (p + 1) * D), (t - a) * D);
          }
        }
        const ref = k === 0 ? slice : encoded(slice, tiers[k]!, extra);
        expectBitExact(got.keys.slice(a * D, b * D), ref.keys, `${label} ${l}/${h} tier ${k} keys`);
        expectBitExact(got.values.slice(a * D, b * D), ref.values, `${label} ${l}/${h} tier ${k} values`);
      }
    }
  }
  expect(seq.cache.stats().tiers!.map((t) => t.rows), `${label} rows per tier`).toEqual(tierTotals);
}

/** Rows in aged tiers of a stream of `n` rows appended in order. */
function agedRowsOf(seq: Sequence, tiers: Tier[]): number {
  const rpb = seq.cache.stats().tiers!.map((t) => t.rowsPerBlock);
  const n = seq.length(0, 0);
  const start = new Array<number>(tiers.length).fill(0);
  start[0] = n;
  return n - aged(start, tiers.map((t) => t.rows ?? 0), rpb)[0]!;
}

const cases: { name: string; policy: () => EvictionPolicy; budget: Parameters<Sequence['evict']>[1] }[] = [
  { name: 'streamingLLM', policy: () => EvictionPolicy.streamingLLM({ sinks: 4, window: 20 }), budget: undefined },
  { name: 'keyNorm', policy: () => EvictionPolicy.keyNorm({ sinks: 2, recent: 4 }), budget: { ratio: 0.4 } },
  { name: 'snapKV', policy: () => EvictionPolicy.snapKV({ window: 2, pool: 3, sinks: 2, recent: 4 }), budget: { ratio: 0.5 } },
  { name: 'tova', policy: () => EvictionPolicy.tova({ sinks: 2, recent: 4 }), budget: { keep: 30 } },
  { name: 'custom', policy: () => EvictionPolicy.custom((v) => { const r = testRng(`custom ${v.layer} ${v.kvHead}`); return randn(r, v.length); }), budget: { ratio: 0.3 } },
  { name: 'keyNorm per-head adaptive', policy: () => EvictionPolicy.keyNorm({ sinks: 2, recent: 4 }), budget: { ratio: 0.4, perHead: 'adaptive' } },
];

describe('precision tiers: eviction', () => {
  for (const tiers of [TWO, THREE]) {
    for (const extra of [{}, { rotate: true }] as Partial<KVCacheOptions>[]) {
      for (const cs of cases) {
        const label = `${tiers.map((t) => `${t.keys}/${t.values}`).join(' -> ')}${extra.rotate ? ' rotated' : ''}: ${cs.name}`;
        it(`${label}: keeps the twin's rows, re-tiered (lowest tier bit-exact to its encoder, tier 0 bit-exact)`, () => {
          const salt = `evict ${label}`;
          const seq = filledTiered(tiers, 150, salt, extra);
          const twin = twinOf(seq, tiers, extra, salt);
          const oldAged = agedRowsOf(seq, tiers);
          expect(oldAged, 'rows aged before eviction').toBeGreaterThan(0);
          const blocksBefore = seq.cache.stats().blocksUsed;
          const c = seq.cache.config;
          const before = Array.from({ length: c.layers * c.kvHeads }, (_, i) => seq.read(Math.floor(i / c.kvHeads), i % c.kvHeads));
          // Scores without evicting: the twin's, bit for bit (the staged rows are the twin's rows;
          // rotated, the twin's re-rotated top-tier rows differ in their last bits).
          if (cs.name !== 'custom') {
            const a = cs.policy().scores(seq, 1, 1), b = cs.policy().scores(twin, 1, 1);
            if (extra.rotate) expectClose(a, b, { rel: 1e-5 }, `${label} scores`);
            else expectBitExact(a, b, `${label} scores`);
          }
          const report = seq.evict(cs.policy(), cs.budget);
          twin.evict(cs.policy(), cs.budget);
          checkRetiered(seq, twin, tiers, oldAged, extra, label, extra.rotate ? before : undefined);
          expect(report.rowsAfter).toBeLessThan(report.rowsBefore);
          expect(seq.cache.stats().blocksUsed, 'blocks after').toBeLessThan(blocksBefore);
          expect(report.blocksFreed).toBe(blocksBefore - seq.cache.stats().blocksUsed);
          seq.cache.dispose();
          twin.cache.dispose();
        });
      }
    }
  }

  it('h2o keeps the rows of highest accumulated mass (the tiered attention\'s), with sinks and recent rows', () => {
    const seq = filledTiered(TWO, 120, 'h2o');
    const c = seq.cache.config;
    const scores = Array.from({ length: c.layers * c.kvHeads }, (_, i) => seq.scores(Math.floor(i / c.kvHeads), i % c.kvHeads).slice());
    const twin = twinOf(seq, TWO, {}, 'h2o');
    const oldAged = agedRowsOf(seq, TWO);
    seq.evict(EvictionPolicy.h2o({ sinks: 3, recent: 6 }), { ratio: 0.5 });
    for (let i = 0; i < scores.length; i++) {
      const l = Math.floor(i / c.kvHeads), h = i % c.kvHeads;
      const keep = selectRows(scores[i]!, seq.length(l, h), 3, 6);
      expectIntsEqual(seq.read(l, h).positions, Int32Array.from(keep), `h2o ${l}/${h} kept rows`);
      // Mass follows the rows it belongs to.
      expectBitExact(seq.scores(l, h), Float32Array.from(keep.map((r) => scores[i]![r]!)), `h2o ${l}/${h} scores`);
    }
    // The twin with the same keep sets (custom scores = the tiered mass) gives the reference rows.
    twin.evict(EvictionPolicy.custom((v) => scores[v.layer * c.kvHeads + v.kvHead]!, { sinks: 3, recent: 6 }), { ratio: 0.5 });
    checkRetiered(seq, twin, TWO, oldAged, {}, 'h2o');
    seq.cache.dispose();
    twin.cache.dispose();
  });

  it('a fork keeps its rows when the parent evicts (shared blocks are not written), and evicts on its own', () => {
    const seq = filledTiered(TWO, 100, 'fork');
    const child = seq.fork();
    const before = child.export();
    seq.evict(EvictionPolicy.streamingLLM({ sinks: 4, window: 16 }));
    expect(child.export()).toEqual(before);
    seq.free();
    const twin = twinOf(child, TWO, {}, 'fork');
    const oldAged = agedRowsOf(child, TWO);
    child.evict(EvictionPolicy.keyNorm({ sinks: 2, recent: 4 }), { ratio: 0.5 });
    twin.evict(EvictionPolicy.keyNorm({ sinks: 2, recent: 4 }), { ratio: 0.5 });
    checkRetiered(child, twin, TWO, oldAged, {}, 'fork child');
    child.free();
    expect(seq.cache.stats().blocksUsed).toBe(0);
    seq.cache.dispose();
    twin.cache.dispose();
  });
});

describe('precision tiers: compaction', () => {
  for (const tiers of [TWO, THREE]) {
    it(`${tiers.map((t) => `${t.keys}/${t.values}`).join(' -> ')}: equals the twin's compaction, re-tiered`, async () => {
      const salt = `compact ${tiers.length}`;
      const seq = filledTiered(tiers, 160, salt);
      const twin = twinOf(seq, tiers, {}, salt);
      const oldAged = agedRowsOf(seq, tiers);
      const options = { ratio: 0.25, protect: { sinks: 2, recent: 8 }, threads: 1 } as const;
      const report = await new Compactor(options).compact(seq);
      const want = await new Compactor(options).compact(twin);
      expect(report.streams.map((s) => s.querySource)).toEqual(want.streams.map((s) => s.querySource));
      // The same fit on the same rows: the same diagnostics, to the bit.
      expect(report.streams.map((s) => [s.rowsAfter, s.outputError, s.massError])).toEqual(want.streams.map((s) => [s.rowsAfter, s.outputError, s.massError]));
      checkRetiered(seq, twin, tiers, oldAged, {}, `compact ${tiers.length}`);
      expect(report.blocksFreed).toBeGreaterThan(0);
      seq.cache.dispose();
      twin.cache.dispose();
    });
  }

  it('online compaction (maybeCompact past maxRows) equals the twin\'s, re-tiered', () => {
    const seq = filledTiered(TWO, 200, 'online');
    const twin = twinOf(seq, TWO, {}, 'online');
    const oldAged = agedRowsOf(seq, TWO);
    const options = { ratio: 0.5, protect: { sinks: 2, recent: 16 }, threads: 1, online: { maxRows: 100 } };
    const a = new Compactor(options).maybeCompact(seq);
    const b = new Compactor(options).maybeCompact(twin);
    expect(a).not.toBeNull();
    expect(b).not.toBeNull();
    expect(seq.length(0, 0)).toBeLessThan(200);
    checkRetiered(seq, twin, TWO, oldAged, {}, 'online');
    seq.cache.dispose();
    twin.cache.dispose();
  });
});

function streamRows(seq: Sequence, layer: number, h: number): Required<StreamRows> {
  const r = seq.read(layer, h);
  return { keys: r.keys, values: r.values, positions: r.positions, beta: r.beta };
}

describe('precision tiers: after eviction and compaction', () => {
  it('append, attention, fork, truncate and export/import keep working on the rebuilt streams', async () => {
    const seq = filledTiered(TWO, 150, 'after');
    seq.evict(EvictionPolicy.keyNorm({ sinks: 2, recent: 4 }), { ratio: 0.6 });
    await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 8 } }).compact(seq);
    const c = seq.cache.config;
    const rng = testRng('after rows');
    // Appends age the rebuilt tier 0 as usual.
    for (let l = 0; l < c.layers; l++) seq.append(l, randn(rng, 20 * c.kvHeads * c.headDim), randn(rng, 20 * c.kvHeads * c.headDim));
    // Attention over the rebuilt runs equals the float64 reference over the stored rows.
    for (let l = 0; l < c.layers; l++) {
      const q = randn(rng, 2 * c.queryHeads * c.headDim);
      const streams = Array.from({ length: c.kvHeads }, (_, h) => streamRows(seq, l, h));
      const ref = attentionReference({ headDim: c.headDim, queryHeads: c.queryHeads, streams, queries: q });
      expectClose(seq.attention(l, q), ref.out, { rel: 2 * outputTol(streams[0]!.positions.length).rel }, `layer ${l} attention`);
    }
    // Fork: the same rows; export/import: bit-exact.
    const child = seq.fork();
    const bytes = seq.export();
    expect(child.export()).toEqual(bytes);
    const again = seq.cache.importSequence(bytes);
    expect(again.export()).toEqual(bytes);
    for (let l = 0; l < c.layers; l++) {
      for (let h = 0; h < c.kvHeads; h++) expectBitExact(again.read(l, h).keys, seq.read(l, h).keys, `import ${l}/${h}`);
    }
    // Truncate within the top tier keeps the prefix.
    const n = seq.length(0, 0);
    const prefix = seq.read(0, 0);
    child.truncate(prefix.positions[n - 3]!);
    const r = child.read(0, 0);
    expectBitExact(r.keys, prefix.keys.slice(0, (n - 3) * c.headDim), 'truncated keys');
    expectIntsEqual(r.positions, prefix.positions.slice(0, n - 3), 'truncated positions');
    // Into another cache of the same options, and evicted again there.
    const other = new KVCache({ ...shape, tiers: TWO });
    const moved = other.importSequence(bytes);
    moved.evict(EvictionPolicy.streamingLLM({ sinks: 2, window: 10 }));
    expect(moved.length(0, 0)).toBe(12);
    for (const s of [seq, child, again]) s.free();
    expect(seq.cache.stats().blocksUsed).toBe(0);
    seq.cache.dispose();
    other.dispose();
  });
});
