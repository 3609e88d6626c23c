// The rows a calibrating low-rank stream holds before its bases are fitted (HeldRows in
// cpp/core/sequence.h): binary16 (half the bytes of f32) unless the cache stores f32 rows;
// stats().lowRankBytes counts them; a row beyond the binary16 range is held exactly (f32);
// export / import keeps them bit-exactly, in the same precision.
import { describe, expect, it } from 'vitest';

import { KVCache } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { roundToF16 } from '../reference/formats-reference';
import { randn, testRng } from '../reference/random';

const D = 32;
const base = { layers: 2, kvHeads: 2, headDim: D, queryHeads: 4, groupSize: 8, threads: 1 } as const;

describe('calibration rows held before the fit', () => {
  it('binary16 in an int8 / f16 cache, f32 in an f32 cache: stats count 2 or 4 bytes per element plus positions', () => {
    const rng = testRng();
    const n = 50;
    for (const [keys, values, bytes] of [['int8', 'int8', 2], ['f16', 'int4', 2], ['f32', 'int8', 4], ['f16', 'f32', 4]] as const) {
      using cache = new KVCache({ ...base, keys, values, lowRank: { keys: 8, values: 8, calibrationRows: 256 } });
      const seq = cache.createSequence();
      const k = randn(rng, n * 2 * D), v = randn(rng, n * 2 * D);
      for (const l of [0, 1]) seq.append(l, k, v);
      expect(seq.bases(0, 0)).toBeNull();
      // 4 streams of n rows: keys and values of D elements, and an i32 position per row
      expect(cache.stats().lowRankBytes).toBe(4 * n * (2 * D * bytes + 4));
      const r = seq.read(1, 1);
      for (let t = 0; t < n; t++) {
        for (let d = 0; d < D; d++) {
          const x = k[(t * 2 + 1) * D + d]!, y = v[(t * 2 + 1) * D + d]!;
          expect(r.keys[t * D + d]).toBe(bytes === 2 ? roundToF16(x) : Math.fround(x));
          expect(r.values[t * D + d]).toBe(bytes === 2 ? roundToF16(y) : Math.fround(y));
        }
      }
      // attention over the held rows is exact for them
      const q = randn(rng, 2 * 4 * D);
      const want = attentionReference({ headDim: D, queryHeads: 4, streams: [seq.read(0, 0), seq.read(0, 1)], queries: q }).out;
      expectClose(seq.attention(0, q), want, { rel: 2e-5, abs: 2e-5 }, `${keys}/${values}`);
    }
  });

  it('a row beyond the binary16 range is held exactly (the stream holds f32 from then on)', () => {
    const rng = testRng();
    using cache = new KVCache({ ...base, layers: 1, keys: 'int8', values: 'int8', lowRank: { keys: 8, values: 8, calibrationRows: 64 } });
    const seq = cache.createSequence();
    const k = randn(rng, 10 * 2 * D), v = randn(rng, 10 * 2 * D);
    seq.append(0, k.subarray(0, 4 * 2 * D), v.subarray(0, 4 * 2 * D));
    k[5 * 2 * D + 3] = 1e5;  // row 5 of head 0
    seq.append(0, k.subarray(4 * 2 * D), v.subarray(4 * 2 * D));
    const r0 = seq.read(0, 0), r1 = seq.read(0, 1);
    expect(r0.keys[5 * D + 3]).toBe(1e5);
    expect(r0.keys[0]).toBe(roundToF16(k[0]!));               // rows held before stay as held
    expect(r0.keys[6 * D]).toBe(Math.fround(k[6 * 2 * D]!));   // rows after are f32
    expect(r1.keys[6 * D]).toBe(roundToF16(k[(6 * 2 + 1) * D]!));  // the other stream: binary16
    expect(cache.stats().lowRankBytes).toBe(10 * (2 * D * 4 + 4) + 10 * (2 * D * 2 + 4));
  });

  it('export / import keeps held rows bit-exactly and in the same precision', () => {
    const rng = testRng();
    for (const keys of ['int8', 'f32'] as const) {
      using cache = new KVCache({ ...base, keys, values: 'int8', lowRank: { keys: 8, values: 16, calibrationRows: 40 } });
      const seq = cache.createSequence();
      for (const l of [0, 1]) seq.append(l, randn(rng, 30 * 2 * D), randn(rng, 30 * 2 * D));
      const bytes = cache.stats().lowRankBytes;
      const again = cache.importSequence(seq.export());
      expect(cache.stats().lowRankBytes).toBe(2 * bytes);
      for (const l of [0, 1]) for (const h of [0, 1]) expect(again.read(l, h)).toEqual(seq.read(l, h));
      expect(Buffer.from(again.export()).equals(Buffer.from(seq.export()))).toBe(true);
      // both reach the calibration point alike
      const k = randn(rng, 12 * 2 * D), v = randn(rng, 12 * 2 * D);
      seq.append(0, k, v);
      again.append(0, k, v);
      expect(again.bases(0, 1)).toEqual(seq.bases(0, 1));
      expect(again.read(0, 1)).toEqual(seq.read(0, 1));
    }
  });
});
