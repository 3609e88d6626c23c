// Attention Matching compaction of low-rank caches with unequal key and value ranks on device
// 'cuda' against device 'cpu' (on the real GPU when there is one, else the SIMT emulator;
// test/support/cuda-target.ts). Both devices read the same coefficient rows (projections and
// bases run on the host), score with r_k-wide keys against the projected recorded queries and
// fit values of the value rows' own width r_v (or unprojected D-wide values), so they keep the
// same rows and fit the same weights and values up to f32 summation order.
//
// Tolerance of the fits (compaction-pair.ts: fitDifference, weights and weighted values
// relative to their maxima): both fits solve the same ridge normal equations (Cholesky in f64
// on f32 Gram matrices built from f32 softmax rows), so they differ by the f32 rounding of
// those inputs, ~1e-7 relative, times the condition number of the Gram matrix (<= ~1e2 with
// the ridge on these sizes): 5e-5 leaves a margin of about 5 and is the bound the CPU's own
// coefficient- vs full-space fits are held to (lowrank-ranks.test.ts). A GPU adds FMA
// contraction and __expf (1e-6 relative), so 'gpu' rules allow 5e-4.
import { describe, expect, it } from 'vitest';

import { Compactor, KVCache, type KVCacheOptions, type Storage } from '../../lib/index';
import { relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { fitDifference } from '../lowrank/compaction-pair';
import { cudaTarget } from '../support/cuda-target';

const target = cudaTarget();

describe(`compaction with unequal key and value ranks, device cuda (${target.kind}) matches device cpu`, () => {
  const D = 64, kvHeads = 2, QH = 4;
  const fitTol = target.rules === 'exact' ? 5e-5 : 5e-4;
  const cases: Array<{ keys: number; values: number; storage: Storage; chunkSize?: number; method?: 'highest-attention' | 'omp' }> = [
    { keys: 16, values: 32, storage: 'f32' },
    { keys: 32, values: 16, storage: 'f32', chunkSize: 40 },
    { keys: 16, values: 64, storage: 'f32' },  // values kept unprojected
    { keys: 24, values: 16, storage: 'f32', method: 'omp' },
    { keys: 16, values: 32, storage: 'int8' },  // fitted values re-quantized on write
  ];
  for (const c of cases) {
    const label = `keys rank ${c.keys}, values rank ${c.values}, ${c.storage}${c.chunkSize ? `, chunks of ${c.chunkSize}` : ''}${c.method ? `, ${c.method}` : ''}`;
    it(`${label}: same keep sets, fits and attention after compaction`, async () => {
      const rng = testRng();
      const options: KVCacheOptions = {
        layers: 1, kvHeads, headDim: D, queryHeads: QH, blockSize: 16, keys: c.storage, values: c.storage, groupSize: 8,
        lowRank: { keys: c.keys, values: c.values, calibrationRows: 24 }, threads: 1,
      };
      using cpu = new KVCache({ ...options, device: 'cpu' });
      using gpu = new KVCache({ ...options, device: 'cuda' });
      const a = cpu.createSequence(), b = gpu.createSequence();
      const T = 120;
      const k = randn(rng, T * kvHeads * D, 2), v = randn(rng, T * kvHeads * D);
      a.append(0, k, v);
      b.append(0, k, v);
      for (let i = 0; i < 40; i++) {  // reference queries: 40 recorded decode steps, GQA 2
        const q = randn(rng, QH * D, 2);
        a.attention(0, q, { recordQueries: true });
        b.attention(0, q, { recordQueries: true });
      }
      const before = [0, 1].map((h) => a.read(0, h));
      const compactor = new Compactor({ ratio: 0.25, protect: { sinks: 2, recent: 4 }, ...(c.chunkSize ? { chunkSize: c.chunkSize } : {}),
        ...(c.method ? { method: c.method } : {}) });
      const ra = await compactor.compact(a), rb = await compactor.compact(b);
      expect(rb.rowsAfter).toBe(ra.rowsAfter);
      expect(rb.rowsAfter).toBeLessThan(rb.rowsBefore);
      for (let s = 0; s < ra.streams.length; s++) {
        const x = ra.streams[s]!, y = rb.streams[s]!;
        expect(y.queries).toBe(x.queries);
        // a real fit (random rows at ratio 0.25 keep a relative output error well below 1)
        expect(x.outputError).toBeGreaterThan(0);
        expect(x.outputError).toBeLessThan(0.9);
        expect(Math.abs(y.outputError - x.outputError), `stream ${s} output error`).toBeLessThan(1e-4 + 1e-3 * x.outputError);
        expect(Math.abs(y.massError - x.massError), `stream ${s} mass error`).toBeLessThan(1e-4 + 1e-3 * x.massError);
      }
      for (let h = 0; h < kvHeads; h++) {
        const xa = a.read(0, h), xb = b.read(0, h);
        // same kept rows: keys and positions are the original rows, read back alike
        expect(Array.from(xb.positions)).toEqual(Array.from(xa.positions));
        expect(relError(xb.keys, xa.keys)).toBeLessThan(target.rules === 'exact' ? 1e-7 : 1e-6);
        const diff = fitDifference(xb, xa, D);
        expect(diff.weights, `head ${h} weights`).toBeLessThan(fitTol);
        // int8 re-quantizes the fitted values: a difference below the fit's may move a code by one step
        expect(diff.weightedValues, `head ${h} weighted values`).toBeLessThan(c.storage === 'int8' ? 2e-2 : fitTol);
        // the values were refitted (not the kept originals): at least one kept row changed
        let changed = 0;
        const orig = before[h]!;
        for (let j = 0; j < xa.positions.length; j++) {
          const r = Array.from(orig.positions).indexOf(xa.positions[j]!);
          for (let d = 0; d < D; d++) changed = Math.max(changed, Math.abs(xa.values[j * D + d]! - orig.values[r * D + d]!));
        }
        expect(changed, `head ${h}: values refitted`).toBeGreaterThan(1e-3);
      }
      for (const tq of [3, 1]) {
        const q = randn(rng, tq * QH * D);
        expect(relError(b.attention(0, q), a.attention(0, q)), `attention after compaction, tq ${tq}`).toBeLessThan(target.rules === 'exact' ? 1e-4 : 1e-3);
      }
    });
  }
});
