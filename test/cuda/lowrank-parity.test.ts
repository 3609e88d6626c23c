// Low-rank storage on device 'cuda' against device 'cpu' (on the real GPU when there is one,
// else the SIMT emulator; test/support/cuda-target.ts). The device holds the coefficient rows
// and runs the append and the r-dimensional attention kernels (codec width = rank); the
// projections, the lift and the basis fit run on the host for both devices, so the
// coefficient rows are identical and attention differs only as full-rank attention does.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type KVCacheOptions, type Storage } from '../../lib/index';
import { relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { cudaTarget, expectRowsMatch } from '../support/cuda-target';

const target = cudaTarget();

describe(`low-rank storage, device cuda (${target.kind}) matches device cpu`, () => {
  for (const storage of ['f16', 'int8', 'int4'] as Storage[]) {
    it(`${storage} coefficients: calibration, projected append, r-dimensional attention, eviction, compaction, export`, async () => {
      const rng = testRng();
      const kvHeads = 2, D = 64, R = 16;
      const options: KVCacheOptions = {
        layers: 1, kvHeads, headDim: D, queryHeads: 8, blockSize: 16, keys: storage, values: storage, groupSize: 16,
        lowRank: { keys: R, values: R, calibrationRows: 24 },
      };
      const cpu = new KVCache({ ...options, device: 'cpu' });
      const gpu = new KVCache({ ...options, device: 'cuda' });
      const a = cpu.createSequence();
      const b = gpu.createSequence();
      for (const T of [10, 30, 1, 1]) {  // crosses the calibration point, then decodes
        const k = randn(rng, T * kvHeads * D), v = randn(rng, T * kvHeads * D);
        a.append(0, k, v);
        b.append(0, k, v);
        const q = randn(rng, 8 * D);
        const lseA = new Float32Array(8), lseB = new Float32Array(8);
        const outA = a.attention(0, q, { lse: lseA, recordQueries: true, accumulateScores: true });
        const outB = b.attention(0, q, { lse: lseB, recordQueries: true, accumulateScores: true });
        expect(relError(outB, outA)).toBeLessThan(target.attentionRel);
        expect(relError(lseB, lseA)).toBeLessThan(target.lseRel);
      }
      for (let h = 0; h < kvHeads; h++) {
        expect(b.bases(0, h)).toEqual(a.bases(0, h));
        const ra = a.read(0, h), rb = b.read(0, h);
        expectRowsMatch(target, rb.keys, ra.keys, storage, 16, `keys ${h}`);
        expectRowsMatch(target, rb.values, ra.values, storage, 16, `values ${h}`);
      }
      if (target.rules === 'exact') expect(Buffer.from(b.export()).equals(Buffer.from(a.export()))).toBe(true);
      const a2 = a.fork(), b2 = b.fork();
      a.evict(EvictionPolicy.h2o({ recent: 4 }), { ratio: 0.5 });
      b.evict(EvictionPolicy.h2o({ recent: 4 }), { ratio: 0.5 });
      await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 4 } }).compact(a2);
      await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 4 } }).compact(b2);
      for (const [x, y] of [[a, b], [a2, b2]] as const) {
        expect(Array.from(y.lengths(0))).toEqual(Array.from(x.lengths(0)));
        const q = randn(rng, 8 * D);
        expect(relError(y.attention(0, q), x.attention(0, q))).toBeLessThan(target.rules === 'exact' ? 1e-4 : 1e-3);
      }
      cpu.dispose();
      gpu.dispose();
    });
  }
});
