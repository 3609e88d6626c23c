// Numbers with a defined meaning (README "Semantics"):
// - keys, values and queries holding NaN or ±Infinity fail with INVALID_ARGUMENT and change
//   nothing (checked per row inside the CPU's fused append, by a host scan on CUDA, and on
//   the queries before attention);
// - finite inputs never become Inf or NaN in storage: f16 / bf16 elements and the f16
//   parameters of int8 / int4 groups saturate at the f16 range;
// - positions stay in [0, 2^31 - 2], so nextPosition never overflows.
// Each device: 'cpu' and 'cuda' (on the GPU, or on the CPU through the test addon's SIMT
// emulator: test/support/cuda-target.ts decides, never skipped).
import { describe, expect, it } from 'vitest';
import { Compactor, KVCache, type Sequence } from '../../lib/index';
import { expectKVError } from '../foundation/helpers';
import { toF16Bits } from '../reference/formats-reference';
import { randn, testRng } from '../reference/random';
import { cudaTarget, expectRowsMatch } from '../support/cuda-target';

const target = cudaTarget();
const devices = ['cpu', 'cuda'] as const;
const STORAGES = ['f32', 'f16', 'bf16', 'int8', 'int4'] as const;
const INT32_MAX = 0x7fffffff;

function snapshot(cache: KVCache, seqs: Sequence[], withStats = true): string {
  return (withStats ? JSON.stringify(cache.stats()) : '') + seqs.map((s) => Buffer.from(s.export()).toString('base64')).join('|');
}

for (const device of devices) {
  describe(`device ${device}`, () => {
    const shape = { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, blockSize: 4, threads: 1, device };

    it('non-finite keys / values: INVALID_ARGUMENT, nothing changes (every format, f32 and f16 input, new blocks and copy-on-write)', () => {
      const rng = testRng();
      for (const storage of STORAGES) {
        const cache = new KVCache({ ...shape, keys: storage, values: storage === 'int4' ? 'int8' : storage, groupSize: 16 });
        const seq = cache.createSequence();
        const row = shape.kvHeads * shape.headDim;
        seq.append(0, randn(rng, 3 * row), randn(rng, 3 * row)); // block 0 partly filled
        const child = seq.fork(); // shares that block: an append must copy it first
        for (const bad of [NaN, Infinity, -Infinity]) {
          for (const target of ['keys', 'values'] as const) {
            const T = 6; // fills the shared block and needs a new one
            const keys = randn(rng, T * row), values = randn(rng, T * row);
            (target === 'keys' ? keys : values)[4 * row + 7] = bad; // token 4, kv head 0
            const label = `${storage} ${target} ${bad}`;
            // The fork's rows are unchanged (the copy-on-write of its shared block may stay:
            // same bytes, one more block; block accounting of failed appends is the
            // transactions' business, cpp/core/cache.cpp).
            const rowsBefore = snapshot(cache, [seq, child], false);
            const err = expectKVError(() => child.append(0, keys, values), 'INVALID_ARGUMENT', label);
            expect(err.message, label).toMatch(/token 4, kv head 0/);
            expect(snapshot(cache, [seq, child], false), `${label}: rows unchanged`).toBe(rowsBefore);
            const before = snapshot(cache, [seq, child]);
            expectKVError(() => seq.append(1, toF16Bits(keys), toF16Bits(values)), 'INVALID_ARGUMENT', `${label} f16 bits`);
            expect(snapshot(cache, [seq, child]), `${label} f16 bits: nothing changed`).toBe(before);
          }
        }
        // Still usable afterwards.
        child.append(0, randn(rng, row), randn(rng, row));
        expect(child.length(0, 0)).toBe(4);
        cache.dispose();
      }
    });

    // Projected streams skip the whole-input scan (the backend refuses the non-finite
    // coefficient rows such input produces, cpp/core/lowrank.cpp) and name the row after the
    // refused write; calibrating streams hold rows unprojected and are scanned first.
    it('low-rank caches: non-finite keys / values refused with the token and head named, nothing changes (calibrating, crossing the fit, projected)', () => {
      const rng = testRng();
      const D = shape.headDim, row = shape.kvHeads * D;
      for (const lowRank of [{ keys: 8, values: 8 }, { keys: 8, values: 4 }, { keys: 8, values: D }]) {
        const cache = new KVCache({ ...shape, keys: 'int8', values: 'f16', groupSize: 4, lowRank: { ...lowRank, calibrationRows: 8 } });
        const seq = cache.createSequence();
        const child = seq.fork();
        // 0 rows: calibrating; 5 rows: the next 6 cross the fit; 11 rows: every stream projects
        for (const held of [0, 5, 11]) {
          while (seq.length(0, 0) < held) seq.append(0, randn(rng, row), randn(rng, row));
          if (held === 11) expect(seq.bases(0, 1)).not.toBeNull();
          for (const bad of [NaN, Infinity, -Infinity]) {
            for (const side of ['keys', 'values'] as const) {
              const T = 6;
              const keys = randn(rng, T * row), values = randn(rng, T * row);
              (side === 'keys' ? keys : values)[4 * row + D + 3] = bad; // token 4, kv head 1
              const label = `${JSON.stringify(lowRank)} held ${held} ${side} ${bad}`;
              const before = snapshot(cache, [seq, child]);
              const err = expectKVError(() => seq.append(0, keys, values), 'INVALID_ARGUMENT', label);
              expect(err.message, label).toMatch(/token 4, kv head 1/);
              expectKVError(() => seq.append(0, toF16Bits(keys), toF16Bits(values)), 'INVALID_ARGUMENT', `${label} f16 bits`);
              expect(snapshot(cache, [seq, child]), `${label}: nothing changed`).toBe(before);
            }
          }
        }
        // Still usable: a finite append projects.
        seq.append(0, randn(rng, row), randn(rng, row));
        expect(seq.length(0, 1)).toBe(12);
        cache.dispose();
      }
    });

    it('non-finite queries: INVALID_ARGUMENT from attention and attentionBatch, scores untouched', () => {
      const rng = testRng();
      const cache = new KVCache({ ...shape, keys: 'int8', values: 'f16', groupSize: 16 });
      const seq = cache.createSequence();
      const row = shape.kvHeads * shape.headDim;
      seq.append(0, randn(rng, 5 * row), randn(rng, 5 * row));
      const qn = shape.queryHeads * shape.headDim;
      for (const bad of [NaN, Infinity, -Infinity]) {
        const q = randn(rng, qn);
        q[qn - 1] = bad;
        const before = snapshot(cache, [seq]);
        expectKVError(() => seq.attention(0, q, { accumulateScores: true, recordQueries: true }), 'INVALID_ARGUMENT', `attention ${bad}`);
        expectKVError(() => cache.attentionBatch(0, [seq], q), 'INVALID_ARGUMENT', `attentionBatch ${bad}`);
        expect(snapshot(cache, [seq])).toBe(before);
      }
      const out = seq.attention(0, randn(rng, qn));
      expect(out.every(Number.isFinite)).toBe(true);
    });

    it('huge finite values saturate instead of turning into Inf / NaN (int8, int4, f16, bf16)', () => {
      const D = 32, G = 16;
      // One row per case: magnitudes from just beyond the f16 range to the float32 maximum,
      // alone in a group of ordinary values or spread over the whole group.
      const cases = [7e4, 1e6, 8.4e6, 1e7, 1e20, 3.4028234663852886e38];
      for (const storage of ['int8', 'int4', 'f16', 'bf16'] as const) {
        const cache = new KVCache({ ...shape, kvHeads: 1, queryHeads: 1, headDim: D, keys: storage, values: storage, groupSize: G });
        const seq = cache.createSequence();
        const rows: number[][] = [];
        for (const big of cases) {
          for (const sign of [1, -1]) {
            const x = Array.from({ length: D }, (_, i) => Math.sin(i + big) * 3);
            x[5] = sign * big;
            x[G + 2] = -sign * big; // both ends in the second group: max - min overflows float32
            x[G + 3] = sign * big;
            rows.push(x);
          }
        }
        const flat = new Float32Array(rows.flat());
        seq.append(0, flat, flat);
        const back = seq.read(0, 0);
        for (const [name, arr] of [['keys', back.keys], ['values', back.values]] as const) {
          const bad = arr.findIndex((v) => !Number.isFinite(v));
          expect(bad, `${storage} ${name}: element ${bad} (input ${flat[bad]}) read back ${arr[bad]}`).toBe(-1);
        }
        // The saturated values keep their sign, and the ordinary elements of a group with a
        // huge one stay finite; attention over the rows is finite too.
        for (let r = 0; r < rows.length; r++) {
          const v = back.values[r * D + 5]!;
          expect(Math.sign(v) === Math.sign(flat[r * D + 5]!) || v === 0, `${storage} row ${r}: sign kept`).toBe(true);
        }
        // (bf16 keeps magnitudes up to 3.4e38, whose weighted sum may overflow float32
        // arithmetic in attention; the formats with an f16 range cannot.)
        if (storage !== 'bf16') {
          const out = seq.attention(0, new Float32Array(D).fill(1e-3));
          expect(out.every(Number.isFinite), `${storage}: attention finite`).toBe(true);
        }
        cache.dispose();
      }
    });

    it('positions are bounded: appending past 2^31 - 2 fails with INVALID_ARGUMENT, nextPosition never overflows', () => {
      const rng = testRng();
      const cache = new KVCache({ ...shape, keys: 'f32', values: 'f32' });
      const seq = cache.createSequence();
      const row = shape.kvHeads * shape.headDim;
      expectKVError(() => seq.append(0, randn(rng, row), randn(rng, row), { positions: [INT32_MAX] }), 'INVALID_ARGUMENT', 'position 2^31 - 1');
      seq.append(0, randn(rng, 2 * row), randn(rng, 2 * row), { positions: [INT32_MAX - 3, INT32_MAX - 2] });
      expect(seq.nextPosition(0)).toBe(INT32_MAX - 1);
      const before = snapshot(cache, [seq]);
      expectKVError(() => seq.append(0, randn(rng, 2 * row), randn(rng, 2 * row)), 'INVALID_ARGUMENT', 'default positions past the bound');
      expect(snapshot(cache, [seq])).toBe(before);
      seq.append(0, randn(rng, row), randn(rng, row)); // the last position there is
      expect(seq.nextPosition(0)).toBe(INT32_MAX);
      expect(Array.from(seq.read(0, 1).positions)).toEqual([INT32_MAX - 3, INT32_MAX - 2, INT32_MAX - 1]);
      expectKVError(() => seq.append(0, randn(rng, row), randn(rng, row)), 'INVALID_ARGUMENT', 'nothing after 2^31 - 2');
      expect(seq.nextPosition(0)).toBe(INT32_MAX);
      // Imports of what was exported pass the import checks.
      expect(cache.importSequence(seq.export()).nextPosition(0)).toBe(INT32_MAX);
    });
  });
}

describe('given reference queries for compaction', () => {
  it('must be finite: INVALID_ARGUMENT from compact() and compactSync(), nothing changes', async () => {
    const rng = testRng();
    const cache = new KVCache({ layers: 1, kvHeads: 2, headDim: 32, queryHeads: 4, threads: 1 });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 64 * 64), randn(rng, 64 * 64));
    const queries = randn(rng, 16 * 4 * 32);
    queries[100] = NaN;
    const compactor = new Compactor({ ratio: 0.5, queries: [queries] });
    const before = snapshot(cache, [seq]);
    expectKVError(() => compactor.compactSync(seq), 'INVALID_ARGUMENT', 'compactSync');
    await expect(compactor.compact(seq)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(snapshot(cache, [seq])).toBe(before);
    queries[100] = 0.5;
    expect((await compactor.compact(seq)).rowsAfter, "finite queries compact").toBeLessThan(128);
  });
});

describe('saturation is the same on every device', () => {
  it('rows with huge values (rotated or not) store the same rows on cpu and cuda', () => {
    const D = 64, G = 16, T = 24;
    const x = new Float32Array(T * D);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < D; i++) x[t * D + i] = Math.sin(7 * t + i) * 2;
      const big = [7e4, 1e6, 8.4e6, 1e7, 1e12, 1e30][t % 6]! * (t % 2 ? -1 : 1);
      x[t * D + (t % G)] = big;
      if (t % 3 === 0) x[t * D + G + 1] = -big; // max - min beyond the f16 range
    }
    for (const storage of ['int8', 'int4', 'f16', 'bf16'] as const) {
      for (const rotate of [false, true]) {
        // Rotation mixes a row, so rotated rows keep to magnitudes it cannot overflow.
        const input = rotate ? x.map((v) => Math.max(-1e30, Math.min(1e30, v))) : x;
        const label = `${storage}${rotate ? ' rotated' : ''}`;
        const stored = (['cpu', 'cuda'] as const).map((device) => {
          const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: storage, values: storage, groupSize: G, rotate, threads: 1, device });
          const seq = cache.createSequence();
          seq.append(0, input, input);
          const out = { bytes: Buffer.from(seq.export()), rows: seq.read(0, 0) };
          cache.dispose();
          return out;
        });
        for (const { rows } of stored) {
          expect(rows.keys.every(Number.isFinite) && rows.values.every(Number.isFinite), `${label}: finite rows`).toBe(true);
        }
        if (target.rules === 'exact') {
          expect(stored[1]!.bytes.equals(stored[0]!.bytes), `${label}: cuda bytes equal cpu bytes`).toBe(true);
        } else {
          // A GPU may round a value on a step boundary the other way (cuda-target.ts).
          const group = rotate ? D : G;
          expectRowsMatch(target, stored[1]!.rows.keys, stored[0]!.rows.keys, storage, group, `${label} keys`);
          expectRowsMatch(target, stored[1]!.rows.values, stored[0]!.rows.values, storage, group, `${label} values`);
        }
      }
    }
  });
});
