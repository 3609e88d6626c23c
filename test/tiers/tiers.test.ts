// Precision tiers (KVCacheOptions.tiers, cpp/core/tiers) on the CPU:
// - aging is bit-exact to requantizing the stored rows: the rows of a tiered stream equal, bit
//   for bit, rows appended to plain caches of each tier's format in a chain (the top tier's
//   stored rows decoded to f32, encoded by the next tier's encoder, and so on);
// - attention over a stream whose blocks differ in format equals the float64 reference over the
//   stored (dequantized) rows, with lse, and attention mass per row;
// - fork, truncate, export/import (version 4; versions 1-3 import into the top tier) round trip;
// - bad tier configurations and the operations tiers do not support give typed KVCacheErrors
//   (eviction and compaction: tiers-evict.test.ts).
import { describe, expect, it } from 'vitest';

import { KVCache, KVCacheError, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { type StreamRows, attentionReference } from '../reference/attention-reference';
import { expectBitExact, expectClose, expectIntsEqual } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { LSE_TOL, checkTight, outputTol } from '../foundation/attention-tolerance';

type Tier = { rows?: number; keys: Storage; values: Storage };

const shape = { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, blockSize: 8, threads: 2 };

function tiered(tiers: Tier[], extra: Partial<KVCacheOptions> = {}): KVCache {
  return new KVCache({ ...shape, ...extra, tiers });
}

/** Appends `sizes` chunks of random rows to every layer of each sequence (same rows for all). */
function appendChunks(seqs: Sequence[], sizes: number[], salt: string): void {
  const rng = testRng(salt);
  const c = seqs[0]!.cache.config;
  for (const n of sizes) {
    for (let layer = 0; layer < c.layers; layer++) {
      const k = randn(rng, n * c.kvHeads * c.headDim);
      const v = randn(rng, n * c.kvHeads * c.headDim);
      for (const s of seqs) s.append(layer, k, v);
    }
  }
}

/** Rows [a, b) of a stream's read(), as a [T, kvHeads, D] tensor of all heads (for re-appending). */
function rowsOf(seq: Sequence, layer: number, a: number, b: number): { keys: Float32Array; values: Float32Array; positions: Int32Array } {
  const c = seq.cache.config;
  const D = c.headDim;
  const H = c.kvHeads;
  const keys = new Float32Array((b - a) * H * D);
  const values = new Float32Array((b - a) * H * D);
  let positions = new Int32Array(0);
  for (let h = 0; h < H; h++) {
    const r = seq.read(layer, h);
    for (let t = a; t < b; t++) {
      keys.set(r.keys.subarray(t * D, (t + 1) * D), ((t - a) * H + h) * D);
      values.set(r.values.subarray(t * D, (t + 1) * D), ((t - a) * H + h) * D);
    }
    positions = r.positions.slice(a, b);
  }
  return { keys, values, positions };
}

/** Rows per tier of one stream, from the aging rule (every tier but the last keeps at least its rows). */
function expectedTierRows(length: number, windows: number[], rowsPerBlock: number[]): number[] {
  const rows = new Array<number>(rowsPerBlock.length).fill(0);
  rows[0] = length;
  for (let k = 0; k + 1 < rowsPerBlock.length; k++) {
    const spare = rows[k]! - windows[k]!;
    const n = spare >= rowsPerBlock[k + 1]! ? Math.floor(spare / rowsPerBlock[k + 1]!) : 0;
    rows[k]! -= n * rowsPerBlock[k + 1]!;
    rows[k + 1]! += n * rowsPerBlock[k + 1]!;
  }
  return rows;
}

/**
 * Checks every stream of `seq` (appended in one go or in pieces, rows aged at append time)
 * against the chain: the top tier's format of the raw rows, then each lower tier's encoder on
 * the rows stored in the tier above. Returns rows per tier of one stream.
 */
function checkAging(seq: Sequence, tiers: Tier[], raw: { keys: Float32Array; values: Float32Array }[], extra: Partial<KVCacheOptions>): number[] {
  const c = seq.cache.config;
  const st = seq.cache.stats();
  const rpb = st.tiers!.map((t) => t.rowsPerBlock);
  const len = seq.length(0, 0);
  const per = expectedTierRows(len, tiers.map((t) => t.rows ?? 0), rpb);
  const streams = c.layers * c.kvHeads;
  expect(st.tiers!.map((t) => t.rows), 'rows per tier').toEqual(per.map((r) => r * streams));
  // Row ranges per tier: the oldest rows are in the last tier.
  const starts: number[] = [];
  let at = 0;
  for (let k = tiers.length - 1; k >= 0; k--) {
    starts[k] = at;
    at += per[k]!;
  }
  for (let layer = 0; layer < c.layers; layer++) {
    // Reference chain: plain caches of each tier's format; tier k's rows pass through tiers 0..k.
    let prev: Sequence | null = null;
    const chain: Sequence[] = [];
    for (let k = 0; k < tiers.length; k++) {
      const ref = new KVCache({ ...shape, ...extra, keys: tiers[k]!.keys, values: tiers[k]!.values }).createSequence();
      if (prev === null) {
        ref.append(layer, raw[layer]!.keys, raw[layer]!.values);
      } else {
        const r = rowsOf(prev, layer, 0, len);
        ref.append(layer, r.keys, r.values, { positions: r.positions });
      }
      chain.push(ref);
      prev = ref;
    }
    for (let h = 0; h < c.kvHeads; h++) {
      const got = seq.read(layer, h);
      const D = c.headDim;
      for (let k = 0; k < tiers.length; k++) {
        if (per[k] === 0) continue;
        const want = chain[k]!.read(layer, h);
        const a = starts[k]!, b = a + per[k]!;
        expectBitExact(got.keys.slice(a * D, b * D), want.keys.slice(a * D, b * D), `layer ${layer} head ${h} tier ${k} keys`);
        expectBitExact(got.values.slice(a * D, b * D), want.values.slice(a * D, b * D), `layer ${layer} head ${h} tier ${k} values`);
        expectIntsEqual(got.positions.slice(a, b), want.positions.slice(a, b), `tier ${k} positions`);
      }
    }
    for (const s of chain) s.cache.dispose();
  }
  return per;
}

/** Appends chunks to `seq` and returns the raw rows per layer ([T, kvHeads, D], concatenated). */
function appendRecorded(seq: Sequence, sizes: number[], salt: string): { keys: Float32Array; values: Float32Array }[] {
  const c = seq.cache.config;
  const rng = testRng(salt);
  const total = sizes.reduce((a, b) => a + b, 0);
  const raw = Array.from({ length: c.layers }, () => ({
    keys: new Float32Array(total * c.kvHeads * c.headDim), values: new Float32Array(total * c.kvHeads * c.headDim),
  }));
  let at = 0;
  for (const n of sizes) {
    for (let layer = 0; layer < c.layers; layer++) {
      const k = randn(rng, n * c.kvHeads * c.headDim);
      const v = randn(rng, n * c.kvHeads * c.headDim);
      seq.append(layer, k, v);
      raw[layer]!.keys.set(k, at * c.kvHeads * c.headDim);
      raw[layer]!.values.set(v, at * c.kvHeads * c.headDim);
    }
    at += n;
  }
  return raw;
}

function streamRows(seq: Sequence, layer: number, h: number): Required<StreamRows> {
  const r = seq.read(layer, h);
  return { keys: r.keys, values: r.values, positions: r.positions, beta: r.beta };
}

/** Attention (output, lse, mass) of `seq` against the float64 reference over its stored rows. */
function checkAttention(seq: Sequence, tq: number, salt: string): void {
  const c = seq.cache.config;
  const rng = testRng(salt);
  for (let layer = 0; layer < c.layers; layer++) {
    const q = randn(rng, tq * c.queryHeads * c.headDim);
    const streams = Array.from({ length: c.kvHeads }, (_, h) => streamRows(seq, layer, h));
    const T = streams[0]!.positions.length;
    const ref = attentionReference({ headDim: c.headDim, queryHeads: c.queryHeads, streams, queries: q });
    checkTight(c.headDim, c.queryHeads, streams, q, ref.out);
    seq.resetScores();
    const lse = new Float32Array(tq * c.queryHeads);
    const out = seq.attention(layer, q, { lse, accumulateScores: true });
    // The merge of runs adds a few float32 operations per element to the kernel's own error.
    expectClose(out, ref.out, { rel: 2 * outputTol(T).rel }, `${salt} layer ${layer} output`);
    expectClose(lse, ref.lse, LSE_TOL, `${salt} layer ${layer} lse`);
    // Attention mass per row: Σ over the group's queries of softmax(logits)[row].
    const group = c.queryHeads / c.kvHeads;
    const scale = 1 / Math.sqrt(c.headDim);
    for (let h = 0; h < c.kvHeads; h++) {
      const s = streams[h]!;
      const mass = new Float64Array(T);
      for (let i = 0; i < tq; i++) {
        const qpos = s.positions[T - tq + i]!;
        for (let g = 0; g < group; g++) {
          const qh = h * group + g;
          const l = ref.lse[i * c.queryHeads + qh]!;
          for (let t = 0; t < T; t++) {
            if (s.positions[t]! > qpos) continue;
            let dot = 0;
            for (let d = 0; d < c.headDim; d++) dot += q[(i * c.queryHeads + qh) * c.headDim + d]! * s.keys[t * c.headDim + d]!;
            mass[t]! += Math.exp(dot * scale + s.beta[t]! - l);
          }
        }
      }
      expectClose(seq.scores(layer, h), mass, { abs: 2e-5 }, `${salt} layer ${layer} head ${h} mass`);
    }
  }
}

describe('precision tiers: aging', () => {
  it('two tiers (f16 -> int8/int4): aged rows equal the int8/int4 encoding of the stored f16 rows, bit for bit', () => {
    const tiers: Tier[] = [{ rows: 24, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int4' }];
    const cache = tiered(tiers, { groupSize: 16 });
    const seq = cache.createSequence();
    const raw = appendRecorded(seq, [5, 1, 1, 17, 3, 40, 1, 1, 1, 29, 2], 'tiers-aging-2');
    const per = checkAging(seq, tiers, raw, { groupSize: 16 });
    expect(per[1], 'some rows aged').toBeGreaterThan(0);
    expect(per[0], 'the top tier keeps its window').toBeGreaterThanOrEqual(24);
    const st = cache.stats();
    expect(st.tiers![1]!.rowsPerBlock % shape.blockSize).toBe(0);
    expect(st.tiers![1]!.rowsPerBlock, 'an int8/int4 block holds more rows than an f16 one').toBeGreaterThan(shape.blockSize);
    expect(st.blocksUsed).toBe(st.tiers![0]!.blocks + st.tiers![1]!.blocks);
    cache.dispose();
  });

  it('three tiers (f32 -> f16 -> int4, rotated keys and values): each tier requantizes the tier above', () => {
    const tiers: Tier[] = [{ rows: 16, keys: 'f32', values: 'f32' }, { rows: 32, keys: 'f16', values: 'bf16' }, { keys: 'int4', values: 'int8' }];
    const extra = { groupSize: 8, rotate: { keys: true, values: true } };
    const cache = tiered(tiers, extra);
    const seq = cache.createSequence();
    const raw = appendRecorded(seq, [3, 50, 1, 1, 1, 1, 64, 7, 1, 33], 'tiers-aging-3');
    const per = checkAging(seq, tiers, raw, extra);
    expect(per[2], 'rows reached the last tier').toBeGreaterThan(0);
    cache.dispose();
  });

  it('bytes per token fall as rows age, and stats count every tier', () => {
    const cache = tiered([{ rows: 16, keys: 'f16', values: 'f16' }, { keys: 'int4', values: 'int4' }]);
    const plain = new KVCache({ ...shape, keys: 'f16', values: 'f16' });
    const a = cache.createSequence();
    const b = plain.createSequence();
    appendChunks([a, b], [400], 'tiers-bytes');
    const st = cache.stats();
    expect(st.tiers!.reduce((s, t) => s + t.bytes, 0)).toBe(st.bytesUsed);
    // Every stream: its top tier's rows in f16 blocks, the rest in whole int4 blocks.
    const streams = 4;
    for (const t of st.tiers!) {
      expect(t.blocks, `${t.keys}/${t.values} blocks`).toBe(streams * Math.ceil(t.rows / streams / t.rowsPerBlock));
    }
    // Here an int4/int4 block holds 2 blocks' worth of f16 rows (the next multiple does not fit
    // in the slot at headDim 32): at most about half of f16 plus the top tier.
    expect(st.tiers![1]!.rowsPerBlock).toBe(2 * shape.blockSize);
    expect(st.bytesPerToken / plain.stats().bytesPerToken).toBeLessThan(0.56);
    cache.dispose();
    plain.dispose();
  });
});

describe('precision tiers: attention', () => {
  it('decode and prefill over runs of different formats equal the float64 reference over the stored rows (output, lse, mass)', () => {
    const cache = tiered([{ rows: 20, keys: 'f16', values: 'f16' }, { rows: 24, keys: 'int8', values: 'int8' }, { keys: 'int4', values: 'int4' }],
      { groupSize: 16 });
    const seq = cache.createSequence();
    appendChunks([seq], [100, 3, 60], 'tiers-attn');
    const st = cache.stats();
    expect(st.tiers!.every((t) => t.rows > 0), 'every tier holds rows').toBe(true);
    checkAttention(seq, 1, 'tiers-decode');
    checkAttention(seq, 5, 'tiers-prefill');
    cache.dispose();
  });

  it('a prefill whose queries reach into aged rows (tq > the top tier) masks each run causally', () => {
    const cache = tiered([{ rows: 8, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }], { groupSize: 16 });
    const seq = cache.createSequence();
    appendChunks([seq], [70], 'tiers-long-prefill');
    expect(cache.stats().tiers![0]!.rows / 4).toBeLessThan(40);
    checkAttention(seq, 40, 'tiers-long-prefill-q');
    cache.dispose();
  });

  it('attentionBatch over sequences with different tier splits equals per-sequence attention', () => {
    const cache = tiered([{ rows: 16, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int4' }], { groupSize: 16 });
    const a = cache.createSequence();
    const b = cache.createSequence();
    appendChunks([a], [90], 'tiers-batch-a');
    appendChunks([b], [30], 'tiers-batch-b');
    const c = cache.config;
    const q = randn(testRng('tiers-batch-q'), 2 * c.queryHeads * c.headDim);
    const batch = cache.attentionBatch(1, [a, b], q);
    const qa = q.subarray(0, c.queryHeads * c.headDim);
    const qb = q.subarray(c.queryHeads * c.headDim);
    expectClose(batch.subarray(0, qa.length), a.attention(1, qa), { abs: 1e-6 }, 'a');
    expectClose(batch.subarray(qa.length), b.attention(1, qb), { abs: 1e-6 }, 'b');
    cache.dispose();
  });
});

describe('precision tiers: fork, truncate, export', () => {
  const tiers: Tier[] = [{ rows: 16, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int4' }];

  it('fork shares aged blocks; both sides append and age on their own', () => {
    const cache = tiered(tiers, { groupSize: 16 });
    const parent = cache.createSequence();
    appendChunks([parent], [77], 'tiers-fork');
    const before = [0, 1].map((h) => parent.read(1, h));
    const child = parent.fork();
    appendChunks([child], [45], 'tiers-fork-child');
    for (let h = 0; h < 2; h++) {
      const p = parent.read(1, h);
      expectBitExact(p.keys, before[h]!.keys, 'parent keys unchanged');
      expectBitExact(p.values, before[h]!.values, 'parent values unchanged');
      // The child's aged prefix is what the parent holds (aged once, shared), then its own rows.
      const ch = child.read(1, h);
      const shared = cache.stats().tiers![1]!.rowsPerBlock;
      expectBitExact(ch.keys.slice(0, shared * 32), p.keys.slice(0, shared * 32), 'shared aged rows');
    }
    appendChunks([parent], [20], 'tiers-fork-parent');
    expect(parent.length(0, 0)).toBe(97);
    expect(child.length(0, 0)).toBe(122);
    child.free();
    parent.free();
    expect(cache.stats().blocksUsed).toBe(0);
    cache.dispose();
  });

  it('truncate inside the top tier and at an aged block boundary keep the prefix; inside an aged block it is UNSUPPORTED', () => {
    const cache = tiered(tiers, { groupSize: 16 });
    const seq = cache.createSequence();
    appendChunks([seq], [100], 'tiers-trunc');
    const rpb = cache.stats().tiers![1]!.rowsPerBlock;
    const aged = cache.stats().tiers![1]!.rows / 4;
    const full = seq.read(0, 1);
    seq.truncate(aged + 5);
    expect(seq.length(0, 1)).toBe(aged + 5);
    expectBitExact(seq.read(0, 1).keys, full.keys.slice(0, (aged + 5) * 32), 'prefix after a cut in the top tier');
    let err: unknown;
    try {
      seq.truncate(aged - 3);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KVCacheError);
    expect((err as KVCacheError).code).toBe('UNSUPPORTED');
    expect(seq.length(0, 1), 'a refused truncate changes nothing').toBe(aged + 5);
    seq.truncate(aged - rpb);
    expect(seq.length(0, 1)).toBe(aged - rpb);
    expectBitExact(seq.read(0, 1).values, full.values.slice(0, (aged - rpb) * 32), 'prefix after a cut at a block boundary');
    appendChunks([seq], [40], 'tiers-trunc-again');
    expect(seq.length(0, 1)).toBe(aged - rpb + 40);
    checkAttention(seq, 1, 'tiers-trunc-attn');
    cache.dispose();
  });

  it('export (version 4) and import round trip bit-exactly, with the same tiers and attention', () => {
    const cache = tiered(tiers, { groupSize: 16 });
    const seq = cache.createSequence();
    appendChunks([seq], [61, 2, 30], 'tiers-export');
    const bytes = seq.export();
    expect(new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true), 'format version').toBe(4);
    const other = tiered(tiers, { groupSize: 16 });
    const copy = other.importSequence(bytes);
    for (let layer = 0; layer < 2; layer++) {
      for (let h = 0; h < 2; h++) {
        const a = seq.read(layer, h);
        const b = copy.read(layer, h);
        expectBitExact(b.keys, a.keys, 'keys');
        expectBitExact(b.values, a.values, 'values');
        expectIntsEqual(b.positions, a.positions, 'positions');
      }
    }
    expect(other.stats().tiers!.map((t) => t.rows)).toEqual(cache.stats().tiers!.map((t) => t.rows));
    expect(copy.export()).toEqual(bytes);
    const q = randn(testRng('tiers-export-q'), 4 * 32);
    expectClose(copy.attention(0, q), seq.attention(0, q), { abs: 0 }, 'attention after import');
    // Appends continue and age after an import.
    appendChunks([copy], [50], 'tiers-export-more');
    checkAttention(copy, 1, 'tiers-export-attn');
    // Damaged bytes, other tiers, a cache without tiers.
    const damaged = bytes.slice();
    damaged[200] = damaged[200]! ^ 0x10;
    expect(() => other.importSequence(damaged)).toThrow(expect.objectContaining({ code: 'CORRUPT_DATA' }));
    const fewer = tiered([{ rows: 32, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int4' }], { groupSize: 16 });
    expect(() => fewer.importSequence(bytes)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    const plain = new KVCache({ ...shape, groupSize: 16 });
    expect(() => plain.importSequence(bytes)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    for (const c of [cache, other, fewer, plain]) c.dispose();
  });

  it('a version 2 export of a plain cache imports into the top tier and ages as if appended', () => {
    const plain = new KVCache({ ...shape, groupSize: 16 });
    const src = plain.createSequence();
    const raw = appendRecorded(src, [90], 'tiers-v2');
    const bytes = src.export();
    expect(new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true)).toBe(2);
    const cache = tiered(tiers, { groupSize: 16 });
    const seq = cache.importSequence(bytes);
    checkAging(seq, tiers, raw, { groupSize: 16 });
    plain.dispose();
    cache.dispose();
  });
});

describe('precision tiers: errors', () => {
  const bad: [string, unknown, string][] = [
    ['not an array', { keys: 'f16' }, 'INVALID_ARGUMENT'],
    ['one tier', [{ keys: 'f16', values: 'f16' }], 'INVALID_ARGUMENT'],
    ['five tiers', [1, 2, 3, 4].map(() => ({ rows: 8, keys: 'f16', values: 'f16' })).concat([{ keys: 'f16', values: 'f16' } as never]), 'INVALID_ARGUMENT'],
    ['rows on the last tier', [{ rows: 8, keys: 'f16', values: 'f16' }, { rows: 8, keys: 'int8', values: 'int8' }], 'INVALID_ARGUMENT'],
    ['no rows on the first tier', [{ keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }], 'INVALID_ARGUMENT'],
    ['rows 0', [{ rows: 0, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }], 'INVALID_ARGUMENT'],
    ['rows not an integer', [{ rows: 1.5, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }], 'INVALID_ARGUMENT'],
    ['unknown format', [{ rows: 8, keys: 'f8', values: 'f16' }, { keys: 'int8', values: 'int8' }], 'INVALID_ARGUMENT'],
    ['missing values', [{ rows: 8, keys: 'f16' }, { keys: 'int8', values: 'int8' }], 'INVALID_ARGUMENT'],
    ['unknown field', [{ rows: 8, keys: 'f16', values: 'f16', bits: 3 }, { keys: 'int8', values: 'int8' }], 'INVALID_ARGUMENT'],
    ['a lower tier larger than the one above', [{ rows: 8, keys: 'int8', values: 'int8' }, { keys: 'f16', values: 'f16' }], 'INVALID_ARGUMENT'],
  ];
  for (const [label, tiers, code] of bad) {
    it(`tiers: ${label} -> ${code}`, () => {
      expect(() => new KVCache({ ...shape, tiers } as KVCacheOptions)).toThrow(expect.objectContaining({ code, name: 'KVCacheError' }));
    });
  }

  it('keys/values other than the first tier\'s, and tiers with keySummaries, lowRank or rope, are refused', () => {
    const t: Tier[] = [{ rows: 8, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }];
    expect(() => tiered(t, { keys: 'int8' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => tiered(t, { keySummaries: true })).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    expect(() => tiered(t, { lowRank: { keys: 16, values: 16 } })).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    expect(() => tiered(t, { rope: { theta: 10000 } })).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    const ok = tiered(t, { keys: 'f16', values: 'f16' });
    expect(ok.config.tiers!.length).toBe(2);
    ok.dispose();
  });

  it('the native layer checks tiers too (bypassing the TypeScript checks)', () => {
    const cache = tiered([{ rows: 8, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }]);
    const NativeCache = (cache.native as unknown as { constructor: new (o: object) => unknown }).constructor;
    const base = { ...shape, keys: 'f16', values: 'f16' };
    expect(() => new NativeCache({ ...base, keys: 'int4', values: 'int4', tiers: [{ rows: 8, keys: 'int4', values: 'int4' }, { keys: 'f32', values: 'f32' }] }))
      .toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => new NativeCache({ ...base, tiers: [{ rows: 8, keys: 'f16', values: 'f16' }, { rows: 4, keys: 'int8', values: 'int8' }] }))
      .toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => new NativeCache({ ...base, tiers: [{ rows: 8, keys: 'int8', values: 'int8' }, { keys: 'int8', values: 'int8' }] }))
      .toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => new NativeCache({ ...base, tiers: 'f16' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    cache.dispose();
  });
});
