// Cache option `rope` on device 'cuda' (the GPU, or the SIMT emulator of the test addon:
// test/support/cuda-target.ts) against device 'cpu'. The two apply RoPE differently by
// design: the CPU rotates each key row once into f32 scratch (rope_kernel.inl), the CUDA
// kernel rotates each query back by the row's position (rope.cuh); both take the angles
// from the same kvc/rope.h tables. So outputs agree to f32 rounding of two different
// formulas (bound 2e-5 normwise, or the device bound when larger), not bit for bit; rows
// and exports stay bit-identical on the emulator.
import { describe, expect, it } from 'vitest';

import { EvictionPolicy, KVCache, type KVCacheOptions, type RopeOptions, type Storage } from '../../lib/index';
import { relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { cudaTarget } from '../support/cuda-target';

const target = cudaTarget();
const ROPE_REL = Math.max(2e-5, target.attentionRel);

describe(`rope on device cuda (${target.kind}) matches device cpu`, () => {
  const cases: { headDim: number; keys: Storage; rope: RopeOptions; start: number }[] = [
    { headDim: 64, keys: 'f16', rope: { theta: 10000, style: 'interleaved' }, start: 0 },
    { headDim: 128, keys: 'int8', rope: { theta: 500000, style: 'half' }, start: 70000 },
    { headDim: 24, keys: 'f32', rope: { theta: 10000, dims: 16, style: 'interleaved' }, start: 2 ** 30 },
    { headDim: 8, keys: 'int4', rope: { theta: 10000, style: 'half' }, start: 3 },
  ];
  for (const c of cases) {
    it(`head_dim ${c.headDim}, ${c.keys} keys, ${c.rope.style} (dims ${c.rope.dims ?? c.headDim}), positions from ${c.start}`, () => {
      const rng = testRng();
      const kvHeads = 2, queryHeads = 4, T = 70;
      const options: KVCacheOptions = {
        layers: 1, kvHeads, headDim: c.headDim, queryHeads, blockSize: 16, keys: c.keys, values: 'f16',
        groupSize: Math.min(8, c.headDim), rope: c.rope,
      };
      const cpu = new KVCache({ ...options, device: 'cpu' });
      const gpu = new KVCache({ ...options, device: 'cuda' });
      try {
        const a = cpu.createSequence();
        const b = gpu.createSequence();
        const positions = Int32Array.from({ length: T }, (_, i) => c.start + 3 * i + (i % 2));
        const k = randn(rng, T * kvHeads * c.headDim);
        const v = randn(rng, T * kvHeads * c.headDim);
        a.append(0, k, v, { positions });
        b.append(0, k, v, { positions });
        for (const tq of [4, 1]) {
          const q = randn(rng, tq * queryHeads * c.headDim);
          const outA = a.attention(0, q);
          const outB = b.attention(0, q);
          expect(relError(outB, outA), `tq ${tq}, stored positions`).toBeLessThan(ROPE_REL);
        }
        // Rank positions after StreamingLLM eviction.
        a.evict(EvictionPolicy.streamingLLM({ sinks: 2, window: 20 }), { keep: 22 });
        b.evict(EvictionPolicy.streamingLLM({ sinks: 2, window: 20 }), { keep: 22 });
        const q = randn(rng, 2 * queryHeads * c.headDim);
        const rankA = a.attention(0, q, { positions: 'rank' });
        const rankB = b.attention(0, q, { positions: 'rank' });
        expect(relError(rankB, rankA), 'rank positions').toBeLessThan(ROPE_REL);
        const storedA = a.attention(0, q);
        expect(relError(rankA, storedA), 'rank and stored positions differ here').toBeGreaterThan(1e-3);
        if (target.rules === 'exact') expect(Buffer.from(b.export()).equals(Buffer.from(a.export()))).toBe(true);
      } finally {
        cpu.dispose();
        gpu.dispose();
      }
    });
  }
});
