// Precision tiers on device 'cuda' against device 'cpu' (on the real GPU when there is one, else
// through the SIMT emulator: test/support/cuda-target.ts). Tiers need no kernel of their own:
// each run of same-format blocks goes through the backend's append, readRows, attention,
// readRawRows and writeRawRows with that tier's layout. So the aged rows must be identical
// (the emulator is bit-exact to the CPU; a GPU may move a value on a rounding boundary one
// quantization step, which the 'gpu' rules admit), and attention, lse and mass equal within the
// target's tolerances, after appends in pieces, fork with copy-on-write, truncate and import.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { expectBitExact, relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { cudaTarget } from '../support/cuda-target';

const target = cudaTarget();

function compare(gpu: Sequence, cpu: Sequence, layer: number, q: Float32Array, label: string): void {
  const cfg = cpu.cache.config;
  for (let h = 0; h < cfg.kvHeads; h++) {
    const a = cpu.read(layer, h);
    const b = gpu.read(layer, h);
    if (target.rules === 'exact') {
      expectBitExact(b.keys, a.keys, `${label}: head ${h} keys`);
      expectBitExact(b.values, a.values, `${label}: head ${h} values`);
    } else {
      expect(relError(b.keys, a.keys), `${label}: head ${h} keys`).toBeLessThan(2e-2);
      expect(relError(b.values, a.values), `${label}: head ${h} values`).toBeLessThan(2e-2);
    }
  }
  const tq = q.length / (cfg.queryHeads * cfg.headDim);
  const lseA = new Float32Array(tq * cfg.queryHeads);
  const lseB = new Float32Array(tq * cfg.queryHeads);
  cpu.resetScores();
  gpu.resetScores();
  const outA = cpu.attention(layer, q, { lse: lseA, accumulateScores: true });
  const outB = gpu.attention(layer, q, { lse: lseB, accumulateScores: true });
  const loose = target.rules === 'exact' ? 1 : 100;  // a GPU's requantized rows may differ by a step
  expect(relError(outB, outA), `${label}: output`).toBeLessThan(target.attentionRel * loose);
  expect(relError(lseB, lseA), `${label}: lse`).toBeLessThan(target.lseRel * loose);
  for (let h = 0; h < cfg.kvHeads; h++) {
    expect(relError(gpu.scores(layer, h), cpu.scores(layer, h)), `${label}: mass of head ${h}`).toBeLessThan(target.scoresRel * loose);
  }
  expect(gpu.cache.stats().tiers!.map((t) => t.rows), `${label}: rows per tier`).toEqual(cpu.cache.stats().tiers!.map((t) => t.rows));
}

describe(`precision tiers, device cuda (${target.kind}) matches device cpu`, () => {
  const cases: Array<{ lower: [Storage, Storage]; headDim: number; rotate: boolean }> = [
    { lower: ['int8', 'int4'], headDim: 32, rotate: true },
    { lower: ['int4', 'int8'], headDim: 16, rotate: false },
  ];
  for (const c of cases) {
    it(`f16 window, then ${c.lower.join('/')}, head_dim ${c.headDim}${c.rotate ? ', rotated' : ''}, GQA 4`, () => {
      const rng = testRng(`tiers-cuda-${c.headDim}`);
      const kvHeads = 2;
      const D = c.headDim;
      const options: KVCacheOptions = {
        layers: 2, kvHeads, headDim: D, queryHeads: kvHeads * 4, blockSize: 8, groupSize: Math.min(16, D), rotate: c.rotate,
        tiers: [{ rows: 12, keys: 'f16', values: 'f16' }, { keys: c.lower[0], values: c.lower[1] }],
      };
      const cpuCache = new KVCache({ ...options, device: 'cpu' });
      const gpuCache = new KVCache({ ...options, device: 'cuda' });
      const a = cpuCache.createSequence();
      const b = gpuCache.createSequence();
      for (const n of [5, 1, 37, 2, 60]) {
        for (const layer of [0, 1]) {
          const k = randn(rng, n * kvHeads * D);
          const v = randn(rng, n * kvHeads * D);
          a.append(layer, k, v);
          b.append(layer, k, v);
        }
      }
      const q = () => randn(rng, 8 * D, 2);
      compare(b, a, 0, q(), 'after appends');
      compare(b, a, 1, randn(rng, 3 * 8 * D, 2), 'three query tokens');
      const fa = a.fork();
      const fb = b.fork();
      const k = randn(rng, 30 * kvHeads * D, 4);
      const v = randn(rng, 30 * kvHeads * D);
      fa.append(0, k, v);
      fb.append(0, k, v);
      compare(fb, fa, 0, q(), 'fork after copy-on-write and aging');
      a.truncate(a.length(0, 0) - 3);
      b.truncate(b.length(0, 0) - 3);
      compare(b, a, 0, q(), 'after truncate');
      const ia = cpuCache.importSequence(a.export());
      const ib = gpuCache.importSequence(a.export());
      compare(ib, ia, 1, q(), 'after import');
      // Eviction and compaction (staged in the top tier's format, re-tiered: tier_rebuild.cpp).
      for (const s of [ia, ib]) s.evict(EvictionPolicy.streamingLLM({ sinks: 4, window: 40 }));
      compare(ib, ia, 0, q(), 'after eviction');
      for (const s of [fa, fb]) {
        for (const layer of [0, 1]) s.attention(layer, randn(testRng('tiers-cuda-queries'), 2 * 8 * D, 2), { recordQueries: true });
      }
      new Compactor({ ratio: 0.4, protect: { sinks: 2, recent: 8 }, threads: 1 }).compactSync(fa);
      new Compactor({ ratio: 0.4, protect: { sinks: 2, recent: 8 }, threads: 1 }).compactSync(fb);
      compare(fb, fa, 1, q(), 'after compaction');
      cpuCache.dispose();
      gpuCache.dispose();
    });
  }
});
