// Compaction of a cache with rope on device 'cuda' (the GPU, or the SIMT emulator of the test
// addon: test/support/cuda-target.ts) against device 'cpu'. The core stages the planned
// streams as post-RoPE f32 rows in the device's own pool (compaction/rope_stage.h) and the
// CUDA backend's compaction runs on them unchanged. Its fit adds in another order than the
// CPU's (test/compactor/cuda.test.ts states the full contract), so this checks what must not
// depend on that: the same rows are kept (positions and pre-RoPE keys bit for bit), the
// device's attention over its compacted stream equals float64 attention over the rows it
// stores (RoPE at their stored positions, fitted beta and values), and the reported errors
// and the attention output agree with the CPU's to fit rounding.
import { describe, expect, it } from 'vitest';

import { Compactor, KVCache, type KVCacheOptions, type Sequence } from '../../lib/index';
import { attentionReference, type StreamRows } from '../reference/attention-reference';
import { relError } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { ropeF64, type RopeSpec } from '../reference/rope-reference';
import { cudaTarget } from '../support/cuda-target';
import { ropeProbe, recordProbe } from './probe';

const target = cudaTarget();

const D = 64, KVH = 2, QH = 4, T = 200, PROBE = 48;

function ropeAttention(r: RopeSpec, rows: { keys: Float32Array; values: Float32Array; positions: Int32Array; beta: Float32Array }[],
  queries: Float32Array, qpos: number): Float64Array {
  const streams: StreamRows[] = rows.map((s) => {
    const keys = new Float64Array(s.keys.length);
    for (let t = 0; t < s.positions.length; t++) keys.set(ropeF64(s.keys, t * D, D, r, s.positions[t]!), t * D);
    return { keys, values: s.values, positions: s.positions, beta: s.beta };
  });
  const q = new Float64Array(queries.length);
  for (let i = 0; i < queries.length / D; i++) q.set(ropeF64(queries, i * D, D, r, qpos), i * D);
  return attentionReference({ headDim: D, queryHeads: QH, streams, queries: q, queryPositions: rows.map(() => [qpos]) }).out;
}

const readAll = (seq: Sequence) => Array.from({ length: KVH }, (_, h) => seq.read(0, h));

describe(`rope compaction on device cuda (${target.kind}) matches device cpu`, () => {
  for (const style of ['interleaved', 'half'] as const) {
    it(`f16 keys and values, ${style}, recorded queries, ratio 0.25`, async () => {
      const rng = testRng();
      const rope: RopeSpec = { theta: 10000, dims: D, style };
      const options: KVCacheOptions = { layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, keys: 'f16', values: 'f16', blockSize: 16, rope };
      const cpu = new KVCache({ ...options, device: 'cpu' });
      const gpu = new KVCache({ ...options, device: 'cuda' });
      try {
        const data = ropeProbe(rng, { kvHeads: KVH, queryHeads: QH, D }, T, PROBE);
        const { positions, dir } = data;
        const seqs = [cpu, gpu].map((cache) => recordProbe(cache.createSequence(), data, { truncate: true }));
        const reports = [];
        for (const seq of seqs) reports.push(await new Compactor({ ratio: 0.25 }).compact(seq));
        const [a, b] = seqs.map(readAll) as [ReturnType<typeof readAll>, ReturnType<typeof readAll>];
        for (let h = 0; h < KVH; h++) {
          expect(Array.from(b[h]!.positions), `kv head ${h}: kept positions`).toEqual(Array.from(a[h]!.positions));
          expect(Buffer.from(b[h]!.keys.buffer).equals(Buffer.from(a[h]!.keys.buffer)), `kv head ${h}: kept keys`).toBe(true);
          const rc = reports[0]!.streams.find((s) => s.kvHead === h)!, rg = reports[1]!.streams.find((s) => s.kvHead === h)!;
          expect(Math.abs(rg.outputError - rc.outputError), `kv head ${h}: reported error`).toBeLessThan(1e-3 * rc.outputError + 1e-5);
        }
        const last = positions[T - 1]!;
        const q = randn(rng, QH * D, 0.4).map((x, i) => x + dir[i % D]!);
        const outGpu = seqs[1]!.attention(0, q);
        expect(relError(outGpu, ropeAttention(rope, b, q, last)), 'device attention over its kept rows').toBeLessThan(Math.max(1e-4, target.attentionRel));
        // f16 values: the two fits may round a value to neighbouring f16 steps.
        expect(relError(outGpu, seqs[0]!.attention(0, q)), 'device vs cpu after compaction').toBeLessThan(2e-3);
      } finally {
        cpu.dispose();
        gpu.dispose();
      }
    });
  }
});
