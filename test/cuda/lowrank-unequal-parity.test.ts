// Low-rank storage with unequal key and value ranks on device 'cuda' against device 'cpu' (on
// the real GPU when there is one, else the SIMT emulator; test/support/cuda-target.ts). The
// device stores key rows of r_k coefficients and value rows of r_v coefficients (or
// unprojected values, r_v = headDim) and its attention kernel reads both widths, writing
// r_v-wide outputs that the core lifts once; device 'cpu' attends such caches on the host
// (cpp/core/lowrank_host.cpp). Projections and basis fits run on the host for both devices,
// so stored rows are identical and attention differs only by summation order.
import { describe, expect, it } from 'vitest';

import { EvictionPolicy, KVCache, KVCacheError, type KVCacheOptions, type Storage } from '../../lib/index';
import { relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { cudaTarget, expectRowsMatch } from '../support/cuda-target';

const target = cudaTarget();

// The export of both devices, or the code both refuse it with (export of unequal ranks may
// not be implemented): the devices must agree either way.
function exported(seq: { export(): Uint8Array }): Buffer | string {
  try {
    return Buffer.from(seq.export());
  } catch (e) {
    if (e instanceof KVCacheError) return e.code;
    throw e;
  }
}

describe(`low-rank storage with unequal key and value ranks, device cuda (${target.kind}) matches device cpu`, () => {
  const D = 64;
  const cases: Array<{ keys: number; values: number; storage: Storage }> = [
    { keys: 16, values: 32, storage: 'f16' },
    { keys: 32, values: 16, storage: 'int8' },
    { keys: 16, values: D, storage: 'int4' },  // values kept unprojected
    { keys: 8, values: 32, storage: 'int8' },
  ];
  for (const { keys, values, storage } of cases) {
    it(`keys rank ${keys}, values rank ${values}, ${storage}: calibration, append, attention, eviction, fork, truncate, refit`, () => {
      const rng = testRng();
      const kvHeads = 2, QH = 8;
      const options: KVCacheOptions = {
        layers: 2, kvHeads, headDim: D, queryHeads: QH, blockSize: 16, keys: storage, values: storage, groupSize: 8,
        lowRank: { keys, values, calibrationRows: 24 },
      };
      const cpu = new KVCache({ ...options, device: 'cpu' });
      const gpu = new KVCache({ ...options, device: 'cuda' });
      const a = cpu.createSequence();
      const b = gpu.createSequence();
      for (const T of [10, 30, 3, 1, 1]) {  // crosses the calibration point, a prefill chunk, then decodes
        for (let layer = 0; layer < 2; layer++) {
          const k = randn(rng, T * kvHeads * D), v = randn(rng, T * kvHeads * D);
          a.append(layer, k, v);
          b.append(layer, k, v);
          const q = randn(rng, T * QH * D);
          const lseA = new Float32Array(T * QH), lseB = new Float32Array(T * QH);
          const outA = a.attention(layer, q, { lse: lseA, recordQueries: true, accumulateScores: true });
          const outB = b.attention(layer, q, { lse: lseB, recordQueries: true, accumulateScores: true });
          expect(relError(outB, outA), `T ${T} layer ${layer} out`).toBeLessThan(target.attentionRel);
          expect(relError(lseB, lseA), `T ${T} layer ${layer} lse`).toBeLessThan(target.lseRel);
        }
      }
      for (let h = 0; h < kvHeads; h++) {
        expect(b.bases(1, h)).toEqual(a.bases(1, h));
        const ra = a.read(1, h), rb = b.read(1, h);
        expectRowsMatch(target, rb.keys, ra.keys, storage, 8, `keys ${h}`);
        expectRowsMatch(target, rb.values, ra.values, storage, 8, `values ${h}`);
      }
      if (target.rules === 'exact') expect(exported(b)).toEqual(exported(a));
      const imported = exported(a);
      if (typeof imported !== 'string') {  // an export of device 'cpu' imports on device 'cuda'
        const c = gpu.importSequence(new Uint8Array(imported));
        const q = randn(rng, QH * D);
        expect(relError(c.attention(1, q), a.fork().attention(1, q))).toBeLessThan(target.attentionRel);
      }
      const a2 = a.fork(), b2 = b.fork();
      a.evict(EvictionPolicy.h2o({ recent: 4 }), { ratio: 0.5 });
      b.evict(EvictionPolicy.h2o({ recent: 4 }), { ratio: 0.5 });
      a2.truncate(20);  // back across the calibration point
      b2.truncate(20);
      const a3 = a2.fork(), b3 = b2.fork();
      a3.fitBases();  // refits every stream from its rows and re-projects them
      b3.fitBases();
      for (const [x, y] of [[a, b], [a2, b2], [a3, b3]] as const) {
        expect(Array.from(y.lengths(0))).toEqual(Array.from(x.lengths(0)));
        const k = randn(rng, 2 * kvHeads * D), v = randn(rng, 2 * kvHeads * D);
        x.append(0, k, v);
        y.append(0, k, v);
        const q = randn(rng, 2 * QH * D);
        const outX = x.attention(0, q), outY = y.attention(0, q);
        // the outputs are not near zero (a lift that dropped the values would show here)
        expect(Math.max(...Array.from(outX, Math.abs))).toBeGreaterThan(1e-3);
        expect(relError(outY, outX)).toBeLessThan(target.rules === 'exact' ? 1e-4 : 1e-3);
      }
      cpu.dispose();
      gpu.dispose();
    });
  }

  // Compaction of such caches on both devices: lowrank-unequal-compaction.test.ts.
});
