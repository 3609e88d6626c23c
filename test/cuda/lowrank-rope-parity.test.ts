// Low-rank storage of pre-RoPE keys (lowRank + rope) on device 'cuda' against device 'cpu' and
// against a float64 reference (on the real GPU when there is one, else the SIMT emulator;
// test/support/cuda-target.ts). The CUDA attention kernel lifts each tile of r_k-wide key
// coefficients with the stream's basis to headDim, rotates it at each row's position (as
// stored, or its rank in the stream) and dots it with the queries; values stay r_v-wide
// coefficients (or unprojected rows when r_v = headDim) and are lifted once per output by the
// core. Device 'cpu' runs its own host path (cpp/core/lowrank_host.cpp). Projections and basis
// fits run on the host for both devices, so stored rows are identical and attention differs
// only by summation order.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { expectClose, relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { gappedPositions, ropeF64, type RopeSpec } from '../reference/rope-reference';
import { ropeProbe, recordProbe } from '../rope/probe';
import { cudaTarget, expectRowsMatch } from '../support/cuda-target';

const target = cudaTarget();

interface Reference {
  out: Float64Array; // [tq][QH][D]
  lse: Float64Array; // [tq][QH]
  mass: Float64Array[]; // [kvHead][rows]: sum over the call's query heads of softmax weights
}

/**
 * Float64 attention of one layer over the rows as stored (seq.read: lifted coefficients, still
 * pre-RoPE): keys rotated at their stored positions or at their rank, each query at its token's
 * position (the stored position of row rows - tq + t) or rank, then causal GQA softmax by
 * stored position, written out with the attention mass of every row.
 */
function reference(seq: Sequence, layer: number, KVH: number, D: number, QH: number, r: RopeSpec, queries: Float32Array, byRank: boolean): Reference {
  const g = QH / KVH, tq = queries.length / (QH * D), scale = 1 / Math.sqrt(D);
  const out = new Float64Array(tq * QH * D), lse = new Float64Array(tq * QH);
  const mass: Float64Array[] = [];
  for (let h = 0; h < KVH; h++) {
    const s = seq.read(layer, h);
    const n = s.positions.length;
    const keys = Array.from({ length: n }, (_, i) => ropeF64(s.keys, i * D, D, r, byRank ? i : s.positions[i]!));
    const m = new Float64Array(n);
    for (let t = 0; t < tq; t++) {
      const row = n - tq + t, cutoff = s.positions[row]!;
      for (let j = 0; j < g; j++) {
        const qh = h * g + j, off = (t * QH + qh) * D;
        const q = ropeF64(queries, off, D, r, byRank ? row : cutoff);
        const logits = new Float64Array(n).fill(-Infinity);
        let mx = -Infinity;
        for (let i = 0; i < n; i++) {
          if (s.positions[i]! > cutoff) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[d]! * keys[i]![d]!;
          logits[i] = dot * scale + s.beta[i]!;
          mx = Math.max(mx, logits[i]!);
        }
        let l = 0;
        for (let i = 0; i < n; i++) l += logits[i] === -Infinity ? 0 : Math.exp(logits[i]! - mx);
        lse[t * QH + qh] = mx + Math.log(l);
        for (let i = 0; i < n; i++) {
          if (logits[i] === -Infinity) continue;
          const p = Math.exp(logits[i]! - mx) / l;
          m[i] = m[i]! + p;
          for (let d = 0; d < D; d++) out[off + d] = out[off + d]! + p * s.values[i * D + d]!;
        }
      }
    }
    mass.push(m);
  }
  return { out, lse, mass };
}

describe(`lowRank + rope, device cuda (${target.kind}) matches device cpu and a float64 reference`, () => {
  const D = 64, KVH = 2, QH = 4;  // GQA 2
  const cases: Array<{ keys: number; values: number; storage: Storage; style: 'interleaved' | 'half'; dims: number }> = [
    { keys: 16, values: 16, storage: 'f16', style: 'interleaved', dims: 64 },
    { keys: 32, values: 64, storage: 'int8', style: 'half', dims: 64 },   // values kept unprojected
    { keys: 24, values: 16, storage: 'int4', style: 'interleaved', dims: 32 },  // partial rope dims
    { keys: 32, values: 16, storage: 'f32', style: 'half', dims: 64 },
    { keys: 16, values: 64, storage: 'f16', style: 'half', dims: 48 },
  ];
  for (const c of cases) {
    const rope: RopeSpec = { theta: 10000, dims: c.dims, style: c.style };
    it(`keys rank ${c.keys}, values rank ${c.values}, ${c.storage}, ${c.style} rope over ${c.dims} dims: stored and rank positions, lse and mass`, () => {
      const rng = testRng();
      const options: KVCacheOptions = {
        layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, blockSize: 16, keys: c.storage, values: c.storage, groupSize: 8,
        rope, lowRank: { keys: c.keys, values: c.values, calibrationRows: 24 }, threads: 1,
      };
      using cpu = new KVCache({ ...options, device: 'cpu' });
      using gpu = new KVCache({ ...options, device: 'cuda' });
      const a = cpu.createSequence(), b = gpu.createSequence();
      // f32 ops differ from the f64 reference by rounding only (lifts of r terms, D-term dots)
      const refTol = target.rules === 'exact' ? 3e-5 : 2e-4;
      let start = 5;
      const massA = [0, 1].map(() => [] as number[]);
      // below the calibration point (host on both devices), across it, a long prefill (two
      // 512-row splits on the device), decodes
      for (const T of [17, 30, 560, 1, 1]) {
        const positions = gappedPositions(rng, start, T);
        start = positions[T - 1]! + 1;
        const k = randn(rng, T * KVH * D), v = randn(rng, T * KVH * D);
        a.append(0, k, v, { positions });
        b.append(0, k, v, { positions });
        const tq = Math.min(T, 5);
        const q = randn(rng, tq * QH * D);
        const lseA = new Float32Array(tq * QH), lseB = new Float32Array(tq * QH);
        const outA = a.attention(0, q, { lse: lseA, accumulateScores: true });
        const outB = b.attention(0, q, { lse: lseB, accumulateScores: true });
        const label = `T ${T}`;
        expect(relError(outB, outA), `${label} out vs cpu`).toBeLessThan(target.attentionRel);
        expect(relError(lseB, lseA), `${label} lse vs cpu`).toBeLessThan(target.lseRel);
        const want = reference(b, 0, KVH, D, QH, rope, q, false);
        expect(Math.max(...Array.from(outB, Math.abs)), `${label}: outputs not near zero`).toBeGreaterThan(1e-2);
        expectClose(outB, want.out, { rel: refTol }, `${label} out vs f64`);
        expectClose(lseB, want.lse, { abs: refTol }, `${label} lse vs f64`);
        for (let h = 0; h < KVH; h++) {
          const m = massA[h]!;
          for (let i = 0; i < want.mass[h]!.length; i++) m[i] = (m[i] ?? 0) + want.mass[h]![i]!;
          expect(relError(b.scores(0, h), a.scores(0, h)), `${label} mass ${h} vs cpu`).toBeLessThan(target.scoresRel);
          expectClose(b.scores(0, h), m, { rel: refTol }, `${label} mass ${h} vs f64`);
        }
      }
      expect(b.bases(0, 0)).toEqual(a.bases(0, 0));
      for (let h = 0; h < KVH; h++) {
        const ra = a.read(0, h), rb = b.read(0, h);
        expectRowsMatch(target, rb.keys, ra.keys, c.storage, 8, `keys ${h}`);
      }
      // Eviction leaves gaps, so rank and stored positions differ; both modes, prefill and decode.
      a.evict(EvictionPolicy.h2o({ sinks: 2, recent: 8 }), { ratio: 0.5 });
      b.evict(EvictionPolicy.h2o({ sinks: 2, recent: 8 }), { ratio: 0.5 });
      expect(Array.from(b.lengths(0))).toEqual(Array.from(a.lengths(0)));
      for (const tq of [4, 1]) {
        for (const byRank of [true, false]) {
          const q = randn(rng, tq * QH * D);
          const opts = byRank ? { positions: 'rank' as const } : {};
          const lseA = new Float32Array(tq * QH), lseB = new Float32Array(tq * QH);
          const outA = a.attention(0, q, { ...opts, lse: lseA }), outB = b.attention(0, q, { ...opts, lse: lseB });
          const label = `after eviction, tq ${tq}, ${byRank ? 'rank' : 'stored'} positions`;
          expect(relError(outB, outA), `${label} out vs cpu`).toBeLessThan(target.attentionRel);
          expect(relError(lseB, lseA), `${label} lse vs cpu`).toBeLessThan(target.lseRel);
          const want = reference(b, 0, KVH, D, QH, rope, q, byRank);
          expectClose(outB, want.out, { rel: refTol }, `${label} out vs f64`);
          expectClose(lseB, want.lse, { abs: refTol }, `${label} lse vs f64`);
        }
      }
      // rank positions really differ from stored ones here (a test that cannot fail otherwise)
      const q = randn(rng, QH * D);
      expect(relError(b.attention(0, q, { positions: 'rank' }), b.attention(0, q))).toBeGreaterThan(1e-3);
      // export / import across devices (bases, rope fields, rows): the same bytes on the emulator
      if (target.rules === 'exact') expect(Buffer.from(b.export()).equals(Buffer.from(a.export()))).toBe(true);
      const imported = gpu.importSequence(a.export());
      expect(relError(imported.attention(0, q), a.attention(0, q))).toBeLessThan(target.attentionRel);
    });
  }

  // Compaction fits on the rope stage (lifted, rotated keys; value coefficients as stored) and
  // keeps the stored coefficient keys: device cuda keeps the CPU's rows and its fit leaves the
  // same errors and attention up to summation order. (Every failing backend call leaving the cache as it was:
  // test/native/transactions, scenarios "lowRank 8/8 + rope".)
  for (const c of [
    { storage: 'f32' as Storage, keys: 16, values: 32, style: 'half' as const, valueTol: 1e-3 },
    { storage: 'int8' as Storage, keys: 24, values: 16, style: 'interleaved' as const, valueTol: 5e-3 },
    { storage: 'f16' as Storage, keys: 32, values: 64, style: 'half' as const, valueTol: 3e-3 },
  ]) {
    it(`compaction of lowRank + rope (keys ${c.keys}, values ${c.values}, ${c.storage}): device cuda keeps the cpu's rows and fits`, async () => {
      const rng = testRng();
      const rope: RopeSpec = { theta: 10000, dims: D, style: c.style };
      const options: KVCacheOptions = { layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, blockSize: 16, keys: c.storage,
        values: c.storage, groupSize: 8, rope, lowRank: { keys: c.keys, values: c.values, calibrationRows: 32 }, threads: 1 };
      using cpu = new KVCache({ ...options, device: 'cpu' });
      using gpu = new KVCache({ ...options, device: 'cuda' });
      const T = 160;
      const data = ropeProbe(rng, { kvHeads: KVH, queryHeads: QH, D }, T, 24);
      const seqs = [cpu, gpu].map((cache) => recordProbe(cache.createSequence(), data, { truncate: true }));
      const before = seqs.map((s) => Array.from({ length: KVH }, (_, h) => s.read(0, h)));
      const reports = [];
      for (const seq of seqs) reports.push(await new Compactor({ ratio: 0.25, protect: { sinks: 2, recent: 4 } }).compact(seq));
      for (let h = 0; h < KVH; h++) {
        const [ra, rb] = seqs.map((s) => s.read(0, h)) as [ReturnType<Sequence['read']>, ReturnType<Sequence['read']>];
        expect(ra.positions.length, `kv head ${h}: rows kept`).toBe(Math.ceil(0.25 * T));
        expect(Array.from(rb.positions), `kv head ${h}: kept positions`).toEqual(Array.from(ra.positions));
        // kept keys: the stored coefficients, unchanged (lifted by the same basis on read)
        const old = before[1]![h]!, index = new Map(Array.from(old.positions, (p, i) => [p, i]));
        for (let j = 0; j < rb.positions.length; j++) {
          const i = index.get(rb.positions[j]!)!;
          expect(Buffer.from(rb.keys.buffer, j * D * 4, D * 4).equals(Buffer.from(old.keys.buffer, i * D * 4, D * 4)),
            `kv head ${h} row ${j}: key as stored`).toBe(true);
        }
        expect(Buffer.from(rb.keys.buffer).equals(Buffer.from(ra.keys.buffer)), `kv head ${h}: kept keys vs cpu`).toBe(true);
        // the fit changed the values (a test that cannot pass by keeping the rows as they were)
        const oldValues = new Float32Array(rb.values.length);
        for (let j = 0; j < rb.positions.length; j++) {
          const i = index.get(rb.positions[j]!)!;
          oldValues.set(old.values.subarray(i * D, (i + 1) * D), j * D);
        }
        expect(relError(rb.values, oldValues), `kv head ${h}: values fitted`).toBeGreaterThan(10 * c.valueTol);
        const rc = reports[0]!.streams.find((s) => s.kvHead === h)!, rg = reports[1]!.streams.find((s) => s.kvHead === h)!;
        // Beta can be weakly identified (rounding moves it far, test/compactor/cuda.test.ts), so
        // the fits are compared by what they are for: the errors they leave on the reference
        // queries, and attention over the compacted rows.
        expect(Math.abs(rg.outputError - rc.outputError), `kv head ${h}: reported output error`).toBeLessThan(1e-3 * rc.outputError + 1e-5);
        expect(Math.abs(rg.massError - rc.massError), `kv head ${h}: reported mass error`).toBeLessThan(1e-3 * rc.massError + 1e-5);
      }
      const q = randn(rng, 4 * QH * D, 0.4).map((x, i) => x + data.dir[i % D]!);
      expect(relError(seqs[1]!.attention(0, q), seqs[0]!.attention(0, q)), 'attention after compaction, cuda vs cpu').toBeLessThan(c.valueTol);
    });
  }

  it('device cuda: lowRank + rope attention with a tile too big for shared memory is refused', () => {
    const rng = testRng();
    // device cuda: a tile's lifted keys must fit shared memory (headDim + rank <= 768)
    using big = new KVCache({ layers: 1, kvHeads: 1, headDim: 512, queryHeads: 1, rope: { theta: 10000 }, device: 'cuda',
      lowRank: { keys: 384, calibrationRows: 4 } });
    const seq = big.createSequence();
    seq.append(0, randn(rng, 8 * 512), randn(rng, 8 * 512));
    expect(() => seq.attention(0, randn(rng, 512))).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
  });
});
