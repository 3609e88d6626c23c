// Low-rank storage (lowRank option): projection, attention and lift against a float64
// reference on fresh random data; low-rank-plus-noise streams whose exact error is known;
// the calibration point (rows before and after the fit); fork and truncate across it; export
// round trips (and version-1 bytes still importing); eviction and compaction on low-rank
// streams; option errors.
import { describe, expect, it } from 'vitest';
import { Compactor, EvictionPolicy, KVCache, KVCacheError } from '../../lib/index';
import { attentionReference, storedStreams } from '../reference/attention-reference';
import { randn, testRng, type Rng } from '../reference/random';
import { roundToF16 } from '../reference/formats-reference';
import { compactPair, fitDifference } from './compaction-pair';
import { orthonormal, project, lift, lowRankPlusNoise, crc32, maxAbs, symmetricEigenvalues } from './lowrank-reference';

const D = 32;
const R = 8;

/** [T, heads, D] token-major from per-head [T, D] arrays. */
function interleave(perHead: Float32Array[], T: number): Float32Array {
  const heads = perHead.length;
  const out = new Float32Array(T * heads * D);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) out.set(perHead[h]!.subarray(t * D, (t + 1) * D), (t * heads + h) * D);
  }
  return out;
}

function expectAttentionMatches(cache: KVCache, seq: ReturnType<KVCache['createSequence']>, rng: Rng, tq: number, tol: number): void {
  const c = cache.config;
  const q = randn(rng, tq * c.queryHeads * D);
  const lse = new Float32Array(tq * c.queryHeads);
  const out = seq.attention(0, q, { lse });
  const ref = attentionReference({ headDim: D, queryHeads: c.queryHeads, streams: storedStreams(seq, 0, c.kvHeads), queries: q });
  expect(maxAbs(out, ref.out)).toBeLessThan(tol);
  expect(maxAbs(lse, ref.lse)).toBeLessThan(tol);
}

describe('low-rank storage', () => {
  it('explicit bases, f32 coefficients: rows read back as B B^T x, attention exact for them (GQA, causal prefill)', () => {
    const rng = testRng();
    using cache = new KVCache({ layers: 1, kvHeads: 2, queryHeads: 6, headDim: D, keys: 'f32', values: 'f32', groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 0 }, blockSize: 8, threads: 1 });
    const seq = cache.createSequence();
    const bases = [0, 1].map(() => ({ keys: orthonormal(rng, D, R), values: orthonormal(rng, D, R) }));
    bases.forEach((b, h) => seq.setBases(0, h, b));
    const T = 29;
    const k = [randn(rng, T * D), randn(rng, T * D)];
    const v = [randn(rng, T * D), randn(rng, T * D)];
    seq.append(0, interleave(k, T), interleave(v, T));
    for (let h = 0; h < 2; h++) {
      const r = seq.read(0, h);
      const wantK = lift(project(k[h]!, bases[h]!.keys, D, R), bases[h]!.keys, D, R);
      const wantV = lift(project(v[h]!, bases[h]!.values, D, R), bases[h]!.values, D, R);
      expect(maxAbs(r.keys, wantK)).toBeLessThan(1e-5);
      expect(maxAbs(r.values, wantV)).toBeLessThan(1e-5);
    }
    // decode and a causal prefill of 5 query tokens, with the stored rows as the reference
    expectAttentionMatches(cache, seq, rng, 1, 2e-5);
    expectAttentionMatches(cache, seq, rng, 5, 2e-5);
  });

  for (const storage of ['f16', 'int8', 'int4'] as const) {
    it(`${storage} coefficients: attention exact for what is stored`, () => {
      const rng = testRng();
      using cache = new KVCache({ layers: 1, kvHeads: 1, queryHeads: 2, headDim: D, keys: storage, values: storage, groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 12 }, threads: 1 });
      const seq = cache.createSequence();
      const T = 70;
      seq.append(0, randn(rng, T * D), randn(rng, T * D));
      expect(seq.bases(0, 0)).not.toBeNull();
      expectAttentionMatches(cache, seq, rng, 1, 5e-5);
      expectAttentionMatches(cache, seq, rng, 3, 5e-5);
    });
  }

  it('streaming fit on a low-rank-plus-noise stream: the error is exactly the part outside the signal subspace', () => {
    const rng = testRng();
    const T = 200;
    const { rows, noise } = lowRankPlusNoise(rng, T, D, R, 0.05);
    const { rows: vrows, noise: vnoise } = lowRankPlusNoise(rng, T, D, R, 0.05);
    using cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: 'f32', values: 'f32', groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 64 }, threads: 1 });
    const seq = cache.createSequence();
    seq.append(0, rows, vrows);
    const r = seq.read(0, 0);
    // x - read(x) is the noise (orthogonal to the signal subspace, which the fit recovers)
    for (let t = 0; t < T; t++) {
      for (let d = 0; d < D; d++) {
        expect(Math.abs(rows[t * D + d]! - r.keys[t * D + d]! - noise[t * D + d]!)).toBeLessThan(2e-4);
        expect(Math.abs(vrows[t * D + d]! - r.values[t * D + d]! - vnoise[t * D + d]!)).toBeLessThan(2e-4);
      }
    }
    // the bases are orthonormal
    const b = seq.bases(0, 0)!;
    for (let i = 0; i < R; i++) {
      for (let j = 0; j < R; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += b.keys[d * R + i]! * b.keys[d * R + j]!;
        expect(Math.abs(dot - (i === j ? 1 : 0))).toBeLessThan(1e-5);
      }
    }
  });

  for (const n of [40, 3]) {
    it(`basis fit: the leading eigenvectors of the rows' second-moment matrix (${n} rows${n < 6 ? ', rank deficient' : ''})`, () => {
      const rng = testRng();
      const Dm = 16, r = 6;
      // channels of spread scales, so that the eigenvalues are distinct
      const rows = randn(rng, n * Dm).map((x, i) => x * (1 + (i % Dm) * 0.37));
      using cache = new KVCache({ layers: 1, kvHeads: 1, headDim: Dm, keys: 'f32', values: 'f32', groupSize: 2, lowRank: { keys: r, values: r, calibrationRows: 0 }, threads: 1 });
      const seq = cache.createSequence();
      seq.append(0, rows, rows);
      seq.fitBases();
      const B = seq.bases(0, 0)!.keys;
      const M = new Float64Array(Dm * Dm);
      for (let t = 0; t < n; t++) for (let p = 0; p < Dm; p++) for (let q = 0; q < Dm; q++) M[p * Dm + q] = M[p * Dm + q]! + rows[t * Dm + p]! * rows[t * Dm + q]!;
      const want = symmetricEigenvalues(M, Dm);
      const scale = want[0]!;
      for (let j = 0; j < r; j++) {
        // M b_j = lambda_j b_j with lambda_j the j-th largest eigenvalue
        const b = Array.from({ length: Dm }, (_, d) => B[d * r + j]!);
        const mb = Array.from({ length: Dm }, (_, p) => b.reduce((s, x, q) => s + M[p * Dm + q]! * x, 0));
        const lambda = b.reduce((s, x, p) => s + x * mb[p]!, 0);
        expect(Math.abs(lambda - want[j]!) / scale).toBeLessThan(1e-6);
        if (want[j]! > 1e-6 * scale) expect(maxAbs(mb, b.map((x) => x * lambda)) / scale).toBeLessThan(1e-5);
        for (let i = 0; i <= j; i++) {
          let dot = 0;
          for (let d = 0; d < Dm; d++) dot += B[d * r + i]! * B[d * r + j]!;
          expect(Math.abs(dot - (i === j ? 1 : 0))).toBeLessThan(1e-6);
        }
      }
    });
  }

  it('calibration boundary: rows before the fit are the input rounded to binary16, bases from exactly the first calibrationRows rows', () => {
    const rng = testRng();
    const opts = { layers: 1, kvHeads: 2, queryHeads: 4, headDim: D, keys: 'f16', values: 'f16', groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 16 }, threads: 1 } as const;
    using cache = new KVCache(opts);
    const T = 40;
    const k = randn(rng, T * 2 * D), v = randn(rng, T * 2 * D);
    const oneByOne = cache.createSequence();
    const chunked = cache.createSequence();
    chunked.append(0, k.subarray(0, 10 * 2 * D), v.subarray(0, 10 * 2 * D));
    chunked.append(0, k.subarray(10 * 2 * D), v.subarray(10 * 2 * D));
    for (let t = 0; t < T; t++) {
      oneByOne.append(0, k.subarray(t * 2 * D, (t + 1) * 2 * D), v.subarray(t * 2 * D, (t + 1) * 2 * D));
      if (t + 1 < 16) {
        expect(oneByOne.bases(0, 0)).toBeNull();
        // rows before the fit are held as binary16 (an f16 cache: HeldRows in sequence.h)
        const r = oneByOne.read(0, 1);
        for (let d = 0; d < D; d++) expect(r.keys[t * D + d]).toBe(roundToF16(k[(t * 2 + 1) * D + d]!));
        expectAttentionMatches(cache, oneByOne, rng, 1, 2e-5);
      } else {
        expect(oneByOne.bases(0, 0)).not.toBeNull();
      }
    }
    expect(oneByOne.length(0, 0)).toBe(T);
    for (let h = 0; h < 2; h++) {
      expect(oneByOne.bases(0, h)!.keys).toEqual(chunked.bases(0, h)!.keys);
      expect(oneByOne.read(0, h).keys).toEqual(chunked.read(0, h).keys);
      expect(oneByOne.read(0, h).values).toEqual(chunked.read(0, h).values);
    }
    expectAttentionMatches(cache, oneByOne, rng, 1, 5e-5);
  });

  it('fork before the calibration point and truncate across it', () => {
    const rng = testRng();
    using cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: 'f32', values: 'f32', groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 16 }, blockSize: 4, threads: 1 });
    const parent = cache.createSequence();
    const k = randn(rng, 30 * D), v = randn(rng, 30 * D);
    parent.append(0, k.subarray(0, 10 * D), v.subarray(0, 10 * D));
    const child = parent.fork();
    child.append(0, k.subarray(10 * D), v.subarray(10 * D));
    expect(parent.bases(0, 0)).toBeNull();
    expect(child.bases(0, 0)).not.toBeNull();
    expect(parent.read(0, 0).keys).toEqual(k.subarray(0, 10 * D));
    expect(child.length(0, 0)).toBe(30);
    // truncate the fitted child below the calibration point: it keeps its bases and rows
    const before = child.read(0, 0);
    child.truncate(5);
    expect(child.length(0, 0)).toBe(5);
    expect(child.bases(0, 0)).not.toBeNull();
    expect(child.read(0, 0).keys).toEqual(before.keys.subarray(0, 5 * D));
    // truncate the calibrating parent, then let it reach the point from there
    parent.truncate(4);
    expect(parent.read(0, 0).keys).toEqual(k.subarray(0, 4 * D));
    parent.append(0, k.subarray(4 * D, 20 * D), v.subarray(4 * D, 20 * D));
    expect(parent.bases(0, 0)).not.toBeNull();
    expectAttentionMatches(cache, parent, rng, 1, 2e-5);
    expectAttentionMatches(cache, child, rng, 1, 2e-5);
  });

  it('export / import round trip with fitted and calibrating streams; version-1 bytes still import', () => {
    const rng = testRng();
    const opts = { layers: 2, kvHeads: 2, headDim: D, keys: 'int8', values: 'int4', groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 16 }, threads: 1 } as const;
    using cache = new KVCache(opts);
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 40 * 2 * D), randn(rng, 40 * 2 * D));  // fitted
    seq.append(1, randn(rng, 7 * 2 * D), randn(rng, 7 * 2 * D));    // still calibrating
    const again = cache.importSequence(seq.export());
    for (const layer of [0, 1]) {
      for (let h = 0; h < 2; h++) {
        expect(again.read(layer, h)).toEqual(seq.read(layer, h));
        expect(again.bases(layer, h)).toEqual(seq.bases(layer, h));
      }
    }
    // the imported calibrating layer continues to its fit like the original
    const more = [randn(rng, 20 * 2 * D), randn(rng, 20 * 2 * D)] as const;
    seq.append(1, more[0], more[1]);
    again.append(1, more[0], more[1]);
    expect(again.read(1, 1)).toEqual(seq.read(1, 1));
    // a full-rank cache's version-2 export without its rank field is a version-1 export
    using plain = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: 'f16', values: 'f16', threads: 1 });
    const p = plain.createSequence();
    p.append(0, randn(rng, 9 * D), randn(rng, 9 * D));
    const v2 = p.export();
    const view = new DataView(v2.buffer, v2.byteOffset, v2.byteLength);
    expect(view.getUint32(8, true)).toBe(2);
    const headerEnd = view.getUint32(12, true);
    const v1 = new Uint8Array(v2.length - 4);
    v1.set(v2.subarray(0, headerEnd));
    v1.set(v2.subarray(headerEnd + 4, v2.length - 4), headerEnd);
    new DataView(v1.buffer).setUint32(8, 1, true);
    new DataView(v1.buffer).setUint32(v1.length - 4, crc32(v1.subarray(0, v1.length - 4)), true);
    expect(plain.importSequence(v1).read(0, 0)).toEqual(p.read(0, 0));
    // low-rank bytes do not import into a cache of another rank
    using other = new KVCache({ ...opts, lowRank: { keys: 16, values: 16 } });
    expect(() => other.importSequence(seq.export())).toThrow(KVCacheError);
  });

  it('fitBases refits from the rows and setBases re-projects; stats count the bases once per fork', () => {
    const rng = testRng();
    using cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: 'f32', values: 'f32', groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 0 }, threads: 1 });
    const seq = cache.createSequence();
    const { rows } = lowRankPlusNoise(rng, 50, D, R, 0);
    seq.append(0, rows, rows);
    expect(seq.bases(0, 0)).toBeNull();  // calibrationRows 0: held until fitBases
    seq.fitBases();
    expect(maxAbs(seq.read(0, 0).keys, rows)).toBeLessThan(1e-4);  // exactly rank R: no loss
    const stats = cache.stats();
    expect(stats.lowRankBytes).toBe(2 * 4 * D * R);
    const child = seq.fork();
    expect(cache.stats().lowRankBytes).toBe(2 * 4 * D * R);
    const other = { keys: orthonormal(rng, D, R), values: orthonormal(rng, D, R) };
    child.setBases(0, 0, other);
    expect(cache.stats().lowRankBytes).toBe(4 * 4 * D * R);
    const want = lift(project(rows, other.keys, D, R), other.keys, D, R);
    expect(maxAbs(child.read(0, 0).keys, want)).toBeLessThan(1e-4);
    expect(maxAbs(seq.read(0, 0).keys, rows)).toBeLessThan(1e-4);  // the parent keeps its own
    const bad = orthonormal(rng, D, R);
    bad[0] = bad[0]! + 0.5;
    expect(() => seq.setBases(0, 0, { keys: bad, values: other.values })).toThrow(/orthonormal/);
  });

  it('eviction keeps coefficient rows bit-exactly; compaction runs on low-rank streams with recorded queries', async () => {
    const rng = testRng();
    using cache = new KVCache({ layers: 1, kvHeads: 2, queryHeads: 4, headDim: D, keys: 'f16', values: 'f16', groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 32 }, threads: 1 });
    const seq = cache.createSequence();
    const T = 120;
    seq.append(0, randn(rng, T * 2 * D), randn(rng, T * 2 * D));
    for (let i = 0; i < 8; i++) seq.attention(0, randn(rng, 4 * D), { recordQueries: true, accumulateScores: true });
    const fork = seq.fork();
    const before = seq.read(0, 0);
    seq.evict(EvictionPolicy.h2o({ recent: 8 }), { ratio: 0.5 });
    const after = seq.read(0, 0);
    expect(after.positions.length).toBe(60);
    for (let i = 0; i < after.positions.length; i++) {
      const t = after.positions[i]!;
      expect(after.keys.subarray(i * D, (i + 1) * D)).toEqual(before.keys.subarray(t * D, (t + 1) * D));
    }
    expectAttentionMatches(cache, seq, rng, 1, 5e-5);
    const report = await new Compactor({ ratio: 0.25, protect: { sinks: 2, recent: 8 } }).compact(fork);
    expect(report).toBeDefined();
    expect(fork.length(0, 0)).toBe(30);
    expectAttentionMatches(cache, fork, rng, 1, 5e-5);
  });

  it('recorded queries read back in headDim (the part in the key basis span); scores cover calibrating rows', () => {
    const rng = testRng();
    using cache = new KVCache({ layers: 1, kvHeads: 1, queryHeads: 2, headDim: D, keys: 'f32', values: 'f32', groupSize: 8, lowRank: { keys: R, values: R, calibrationRows: 0 }, threads: 1 });
    const seq = cache.createSequence();
    seq.append(0, randn(rng, 5 * D), randn(rng, 5 * D));
    seq.attention(0, randn(rng, 2 * D), { accumulateScores: true });
    const mass = seq.scores(0, 0);  // calibrating rows have scores too: one unit per query head
    expect(mass.length).toBe(5);
    expect(mass.reduce((x, y) => x + y, 0)).toBeCloseTo(2, 5);
    const bases = { keys: orthonormal(rng, D, R), values: orthonormal(rng, D, R) };
    seq.setBases(0, 0, bases);
    const q = randn(rng, 2 * D);
    seq.attention(0, q, { recordQueries: true });
    const logged = seq.recordedQueries(0, 0).recent;
    expect(logged.length).toBe(2 * D);
    expect(maxAbs(logged, lift(project(q, bases.keys, D, R), bases.keys, D, R))).toBeLessThan(1e-5);
  });

  it('compaction fitted in coefficient space equals the full-space fit of the lifted rows (measured)', async () => {
    // A full-rank f32 cache holding the lifted rows B c and the same queries: Attention
    // Matching picks the same keys (same logits) and its least-squares values, whose targets
    // lie in span(B_v), come out in that span: equal to the coefficient-space fit, lifted.
    const { low, full, valueBasis, ra, rb } = await compactPair(testRng(), D, R, R);
    using _low = low;
    using _full = full;
    expect(Array.from(ra.positions)).toEqual(Array.from(rb.positions));
    const scale = maxAbs(rb.values, new Float32Array(rb.values.length));
    // the full-space fit lies in span(B_v) ...
    expect(maxAbs(lift(project(rb.values, valueBasis, D, R), valueBasis, D, R), rb.values) / scale).toBeLessThan(1e-5);
    // ... and equals the coefficient-space fit (compaction-pair.ts: fitDifference). Measured
    // over 40 seeds: weights 4.9e-6, weighted values 4.6e-6.
    const diff = fitDifference(ra, rb, D);
    expect(diff.weights).toBeLessThan(5e-5);
    expect(diff.weightedValues).toBeLessThan(5e-5);
  });

  it('option errors are INVALID_ARGUMENT', () => {
    const base = { layers: 1, kvHeads: 1, headDim: D, groupSize: 8 };
    for (const lowRank of [{ keys: 7 }, { keys: 64 }, { keys: 8, values: 12 }, { keys: 0 }, { keys: 8, calibrationRows: -1 }, { keys: 8, extra: 1 }]) {
      expect(() => new KVCache({ ...base, lowRank } as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    expect(() => new KVCache({ ...base, groupSize: 16, lowRank: { keys: 8 } })).toThrow(/groupSize/);
    expect(() => new KVCache({ ...base, rotate: true, lowRank: { keys: 8 } })).toThrow(/rotate/);
    expect(() => new KVCache({ ...base, keySummaries: true, lowRank: { keys: 8 } })).toThrow(/keySummaries/);
  });
});
