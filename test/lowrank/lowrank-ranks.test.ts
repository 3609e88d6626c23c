// Low-rank caches whose key and value ranks differ (values of another rank, or kept
// unprojected with value rank = headDim): export / import (format version 5) round trips
// bit-exactly across the calibration point, with and without rope, and is refused by caches
// of other ranks; Attention Matching compaction fits the values in their own width and
// equals the full-space fit of the lifted rows, with attention over the compacted rows
// exact for what is stored (float64 reference).
import { describe, expect, it } from 'vitest';

import { KVCache, KVCacheError, type KVCacheOptions, type Sequence } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { compactPair, fitDifference } from './compaction-pair';
import { lift, maxAbs, project } from './lowrank-reference';

const D = 32;

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as KVCacheError).code;
  }
  return 'none';
}

function versionOf(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
}

function expectSameStreams(a: Sequence, b: Sequence, layers: number, kvHeads: number): void {
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < kvHeads; h++) {
      const ra = a.read(l, h), rb = b.read(l, h);
      expect(ra.keys).toEqual(rb.keys);
      expect(ra.values).toEqual(rb.values);
      expect(ra.beta).toEqual(rb.beta);
      expect(ra.positions).toEqual(rb.positions);
      expect(a.bases(l, h)).toEqual(b.bases(l, h));
    }
  }
}

describe('low-rank caches with unequal key and value ranks', () => {
  const base = { layers: 2, kvHeads: 2, headDim: D, queryHeads: 4, blockSize: 8, groupSize: 8, threads: 1 } as const;
  const cases: { name: string; options: KVCacheOptions }[] = [
    { name: 'values of rank 16, int8', options: { ...base, keys: 'int8', values: 'int8', lowRank: { keys: 8, values: 16, calibrationRows: 10 } } },
    { name: 'values unprojected, f16 / int4', options: { ...base, keys: 'f16', values: 'int4', lowRank: { keys: 8, values: D, calibrationRows: 10 } } },
    { name: 'values unprojected, with rope', options: { ...base, keys: 'f16', values: 'f16', rope: { theta: 10000 }, lowRank: { keys: 16, values: D, calibrationRows: 10 } } },
  ];
  for (const c of cases) {
    it(`export / import (version 5) round trips across the calibration point: ${c.name}`, () => {
      const rng = testRng();
      using cache = new KVCache(c.options);
      const seq = cache.createSequence();
      const row = base.kvHeads * D;
      // layer 0 past its calibration point, layer 1 still calibrating (held rows)
      seq.append(0, randn(rng, 14 * row), randn(rng, 14 * row));
      seq.append(1, randn(rng, 6 * row), randn(rng, 6 * row));
      const bytes = seq.export();
      expect(versionOf(bytes)).toBe(5);
      expect(seq.bases(0, 0)).not.toBeNull();
      expect(seq.bases(1, 0)).toBeNull();
      const again = cache.importSequence(bytes);
      expectSameStreams(seq, again, base.layers, base.kvHeads);
      expect(Buffer.from(again.export()).equals(Buffer.from(bytes))).toBe(true);
      // Both continue alike: layer 1 reaches its calibration point after the import.
      const k = randn(rng, 7 * row), v = randn(rng, 7 * row);
      for (const s of [seq, again]) {
        s.append(0, k, v);
        s.append(1, k, v);
      }
      expectSameStreams(seq, again, base.layers, base.kvHeads);
      const q = randn(rng, 3 * base.queryHeads * D);
      for (const l of [0, 1]) expect(again.attention(l, q)).toEqual(seq.attention(l, q));
      // another process's cache of the same options reads the bytes the same way
      using other = new KVCache(c.options);
      expectSameStreams(other.importSequence(bytes), cache.importSequence(bytes), base.layers, base.kvHeads);
    });
  }

  it('caches of other ranks refuse the bytes (INVALID_ARGUMENT), damaged bytes are CORRUPT_DATA', () => {
    const rng = testRng();
    const opts = { ...base, keys: 'f16', values: 'f16' } as const;
    using a = new KVCache({ ...opts, lowRank: { keys: 8, values: 16, calibrationRows: 4 } });
    using b = new KVCache({ ...opts, lowRank: { keys: 8, values: D, calibrationRows: 4 } });
    using equal = new KVCache({ ...opts, lowRank: { keys: 8, values: 8, calibrationRows: 4 } });
    using plain = new KVCache(opts);
    const fill = (s: Sequence) => {
      for (const l of [0, 1]) s.append(l, randn(rng, 6 * 2 * D), randn(rng, 6 * 2 * D));
      return s.export();
    };
    const [fromA, fromB, fromEqual] = [fill(a.createSequence()), fill(b.createSequence()), fill(equal.createSequence())];
    expect(versionOf(fromEqual)).toBe(2);  // equal ranks keep writing version 2
    for (const [cache, bytes] of [[b, fromA], [equal, fromA], [plain, fromA], [a, fromB], [a, fromEqual], [b, fromEqual]] as const) {
      expect(codeOf(() => cache.importSequence(bytes))).toBe('INVALID_ARGUMENT');
    }
    for (const at of [12, 60, 80, 84, fromB.length >> 1]) {
      const bad = new Uint8Array(fromB);
      bad[at]! ^= 0x10;
      expect(codeOf(() => b.importSequence(bad)), `flip at ${at}`).toBe('CORRUPT_DATA');
    }
  });

  for (const RV of [16, D]) {
    it(`compaction with key rank 8, value rank ${RV}: equals the full-space fit of the lifted rows; attention exact for what is stored`, async () => {
      // As for equal ranks (lowrank.test.ts): a full-rank f32 cache holding the lifted rows and
      // the same recorded queries picks the same rows (same logits) and fits the same values
      // (targets in span(B_v), or in the full space when values are unprojected).
      const rng = testRng();
      const { low, full, a, rows, valueBasis, ra, rb } = await compactPair(rng, D, 8, RV);
      using _low = low;
      using _full = full;
      expect(ra.positions.length).toBeLessThan(rows.positions.length);
      expect(Array.from(ra.positions)).toEqual(Array.from(rb.positions));
      const scale = maxAbs(rb.values, new Float32Array(rb.values.length));
      if (RV < D) expect(maxAbs(lift(project(rb.values, valueBasis, D, RV), valueBasis, D, RV), rb.values) / scale).toBeLessThan(1e-5);
      // as for equal ranks (lowrank.test.ts)
      const diff = fitDifference(ra, rb, D);
      expect(diff.weights).toBeLessThan(5e-5);
      expect(diff.weightedValues).toBeLessThan(5e-5);
      // values were fitted: some kept row's value is not the original row's at its position
      const fitted = Array.from(ra.positions).some((p: number, j: number) => maxAbs(ra.values.subarray(j * D, (j + 1) * D), rows.values.subarray(p * D, (p + 1) * D)) > 1e-3);
      expect(fitted).toBe(true);
      const q = randn(rng, 3 * 2 * D);
      const want = attentionReference({ headDim: D, queryHeads: 2, streams: [ra], queries: q }).out;
      expectClose(a.attention(0, q), want, { rel: 2e-5, abs: 2e-5 }, 'attention after compaction');
    });
  }
});
