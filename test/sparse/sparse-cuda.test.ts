// Sparse decode on device 'cuda' against device 'cpu' (on the real GPU when there is one, else
// through the SIMT emulator: test/support/cuda-target.ts): the same key summaries (compared
// through the block bounds, which they determine), the same picked blocks, and the same sparse
// attention output, lse and attention mass, after appends in pieces, a fork with copy-on-write,
// eviction, truncate and import (of a compacted sequence too: beta enters the summaries); on
// caches with rope too (keys summarized after RoPE at their stored positions).
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { cudaTarget } from '../support/cuda-target';

const target = cudaTarget();

function compare(gpu: Sequence, cpu: Sequence, layer: number, q: Float32Array, rule: { tokens: number; sinks: number; recent: number }, label: string) {
  const a = cpu.sparseSelection(layer, q, rule);
  const b = gpu.sparseSelection(layer, q, rule);
  for (let h = 0; h < a.length; h++) {
    const ba = a[h]!.bounds;
    const bb = b[h]!.bounds;
    expect(bb.length, `${label}: head ${h} block count`).toBe(ba.length);
    for (let i = 0; i < ba.length; i++) {
      expect(Math.abs(bb[i]! - ba[i]!), `${label}: head ${h} bound of block ${i}`).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(ba[i]!)));
    }
    expect(Array.from(b[h]!.blocks), `${label}: head ${h} picked blocks`).toEqual(Array.from(a[h]!.blocks));
  }
  const cfg = cpu.cache.config;
  const tq = q.length / (cfg.queryHeads * cfg.headDim);
  const lseA = new Float32Array(tq * cfg.queryHeads);
  const lseB = new Float32Array(tq * cfg.queryHeads);
  cpu.resetScores();
  gpu.resetScores();
  const outA = cpu.attention(layer, q, { sparse: rule, lse: lseA, accumulateScores: true });
  const outB = gpu.attention(layer, q, { sparse: rule, lse: lseB, accumulateScores: true });
  expect(relError(outB, outA), `${label}: output`).toBeLessThan(target.attentionRel);
  expect(relError(lseB, lseA), `${label}: lse`).toBeLessThan(target.lseRel);
  for (let h = 0; h < cfg.kvHeads; h++) {
    expect(relError(gpu.scores(layer, h), cpu.scores(layer, h)), `${label}: mass of head ${h}`).toBeLessThan(target.scoresRel);
  }
}

describe(`sparse decode, device cuda (${target.kind}) matches device cpu`, () => {
  const cases: Array<{ keys: Storage; headDim: number; rotate: boolean; rope?: KVCacheOptions['rope'] }> = [
    { keys: 'f16', headDim: 64, rotate: false },
    { keys: 'int8', headDim: 32, rotate: true },
    { keys: 'int4', headDim: 16, rotate: false },
    // Keys stored before RoPE: summaries after RoPE at the stored positions, on both devices.
    { keys: 'f16', headDim: 64, rotate: false, rope: { theta: 10000, dims: 64, style: 'interleaved' } },
    { keys: 'int8', headDim: 32, rotate: false, rope: { theta: 500000, dims: 16, style: 'half' } },
  ];
  for (const c of cases) {
    const tag = `${c.rotate ? ', rotated' : ''}${c.rope ? `, rope ${c.rope.style} dims ${c.rope.dims}` : ''}`;
    it(`${c.keys} keys, head_dim ${c.headDim}${tag}, GQA 4`, async () => {
      const rng = testRng(`${c.keys}-${c.headDim}`);
      const kvHeads = 2;
      const D = c.headDim;
      const options: KVCacheOptions = {
        layers: 2, kvHeads, headDim: D, queryHeads: kvHeads * 4, blockSize: 8, keys: c.keys, values: 'f16',
        groupSize: Math.min(16, D), rotate: c.rotate, keySummaries: true, ...(c.rope ? { rope: c.rope } : {}),
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
      const rule = { tokens: 32, sinks: 4, recent: 12 };
      const q = () => randn(rng, 8 * D, 2);
      compare(b, a, 0, q(), rule, 'after appends');
      compare(b, a, 1, randn(rng, 2 * 8 * D, 2), rule, 'two query tokens');
      const fa = a.fork();
      const fb = b.fork();
      const k = randn(rng, 3 * kvHeads * D, 4);
      const v = randn(rng, 3 * kvHeads * D);
      fa.append(0, k, v);
      fb.append(0, k, v);
      compare(fb, fa, 0, q(), rule, 'fork after copy-on-write');
      a.evict(EvictionPolicy.random(5), { ratio: 0.5 });
      b.evict(EvictionPolicy.random(5), { ratio: 0.5 });
      compare(b, a, 0, q(), rule, 'after eviction');
      fa.free();
      fb.free();
      a.truncate(70);
      b.truncate(70);
      compare(b, a, 0, q(), rule, 'after truncate');
      const ia = cpuCache.importSequence(a.export());
      const ib = gpuCache.importSequence(a.export());
      compare(ib, ia, 1, q(), rule, 'after import');
      // A compacted sequence (fitted beta) imported on both devices: the summaries' maxBeta.
      for (let i = 0; i < 8; i++) a.attention(1, q(), { recordQueries: true });
      await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 4 } }).compact(a, { layers: [1] });
      expect([0, 1].some((h) => a.read(1, h).beta.some((x) => x !== 0)), 'compaction fitted beta').toBe(true);
      compare(gpuCache.importSequence(a.export()), cpuCache.importSequence(a.export()), 1, q(), rule, 'after import of a compacted sequence');
      cpuCache.dispose();
      gpuCache.dispose();
    });
  }
});
