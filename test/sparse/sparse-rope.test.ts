// Sparse decode on caches that apply RoPE themselves (cache option `rope`, keys stored before
// RoPE): the key summaries hold each key after RoPE at its stored position and the queries are
// rotated at their own positions, so the block bounds bound the logits attention computes.
// Judged against float64: the bounds lie in the range the float64 summaries of the rotated keys
// allow for float32 rotation (a missing or wrong rotation lands far outside it), bound every
// rotated logit of their block, the picked blocks follow the selection rule, and sparse
// attention equals RoPE attention over the picked rows. Stored positions have gaps and large
// values; eviction keeps them. The device 'cuda' (GPU or emulator) is held to the same checks.
// The summaries stay true through fork + copy-on-write, truncate, compaction (pre-RoPE rows
// kept, beta fitted), export/import and a chunked PrefixStore load; CPU/CUDA parity on rope
// caches is in sparse-cuda.test.ts. (Tiers refuse both rope and keySummaries.)
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, KVCacheError, PrefixStore, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { attentionReference, type StreamRows } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { gappedPositions, ropeF64, type RopeSpec } from '../reference/rope-reference';
import { cudaTarget } from '../support/cuda-target';
import { boundsEnvelope, pickedRows, selectReference, type SparseRule } from './sparse-reference';

const target = cudaTarget();

/** The stream's rows with keys after RoPE at their stored positions, in float64. */
function rotatedRows(seq: Sequence, layer: number, h: number, r: RopeSpec): Required<StreamRows> {
  const s = seq.read(layer, h);
  const D = seq.cache.config.headDim;
  const T = s.positions.length;
  const keys = new Float64Array(T * D);
  for (let t = 0; t < T; t++) keys.set(ropeF64(s.keys, t * D, D, r, s.positions[t]!), t * D);
  return { keys, values: s.values, positions: s.positions, beta: s.beta } as unknown as Required<StreamRows>;
}

/**
 * Every check of one layer; returns the picked blocks per kv head. `tight` = false where a
 * summary may legitimately be looser than its rows (a block truncate cut while a fork shares
 * it): the bounds must then still bound every rotated logit, but may exceed the envelope.
 */
function checkLayer(seq: Sequence, layer: number, q: Float32Array, rule: SparseRule, r: RopeSpec, label: string,
  tight = true): number[][] {
  const c = seq.cache.config;
  const D = c.headDim;
  const group = c.queryHeads / c.kvHeads;
  const tq = q.length / (c.queryHeads * D);
  const sel = seq.sparseSelection(layer, q, rule);
  const picks: number[][] = [];
  const streams: StreamRows[] = [];
  const rotatedQ = new Float64Array(q.length);
  for (let h = 0; h < c.kvHeads; h++) {
    const s = rotatedRows(seq, layer, h, r);
    const T = s.positions.length;
    // Queries of kv head h at the positions of the stream's last tq rows (as attention places them).
    const qs: Float64Array[] = [];
    for (let t = 0; t < tq; t++) {
      for (let g = 0; g < group; g++) {
        const off = (t * c.queryHeads + h * group + g) * D;
        const rq = ropeF64(q, off, D, r, s.positions[T - tq + t]!);
        rotatedQ.set(rq, off);
        qs.push(rq);
      }
    }
    const bounds = sel[h]!.bounds;
    expect(bounds.length, `${label}: bounds of head ${h}`).toBe(Math.ceil(T / c.blockSize));
    const env = boundsEnvelope(s.keys, s.beta, T, D, c.blockSize, qs, 4e-6);
    for (let b = 0; b < bounds.length; b++) {
      const lo = env.lower[b]! - 1e-5 * (1 + Math.abs(env.lower[b]!));
      const hi = env.upper[b]! + 1e-5 * (1 + Math.abs(env.upper[b]!));
      if (tight) {
        expect(bounds[b]!, `${label}: head ${h} block ${b} bound within the float64 range [${lo}, ${hi}]`).toBeGreaterThanOrEqual(lo);
        expect(bounds[b]!, `${label}: head ${h} block ${b} bound within the float64 range [${lo}, ${hi}]`).toBeLessThanOrEqual(hi);
      }
      let maxLogit = -Infinity;
      for (let row = b * c.blockSize; row < Math.min(T, (b + 1) * c.blockSize); row++) {
        for (const qq of qs) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qq[d]! * s.keys[row * D + d]!;
          maxLogit = Math.max(maxLogit, dot / Math.sqrt(D) + s.beta[row]!);
        }
      }
      expect(bounds[b]!, `${label}: head ${h} block ${b} bound >= its rotated logits`).toBeGreaterThanOrEqual(maxLogit - 1e-5);
    }
    const picked = Array.from(sel[h]!.blocks);
    expect(picked, `${label}: head ${h} selection rule`).toEqual(selectReference(bounds, T, c.blockSize, rule, tq));
    picks.push(picked);
    streams.push(pickedRows(s, D, c.blockSize, picked));
  }
  // Sparse attention = attention over the picked rows, keys and queries after RoPE.
  const out = seq.attention(layer, q, { sparse: rule });
  const ref = attentionReference({ headDim: D, queryHeads: c.queryHeads, streams, queries: rotatedQ });
  // A GPU's approximate exp admits its own tolerance (test/support/cuda-target.ts).
  const rel = c.device === 'cuda' ? Math.max(2e-5, target.attentionRel) : 2e-5;
  expectClose(out, ref.out, { rel, abs: rel }, `${label}: sparse output`);
  return picks;
}

const CASES: Array<{ name: string; keys: Storage; D: number; rope: RopeSpec; start: number; device?: 'cuda' }> = [
  // AVX-512 bounds kernel (head_dim % 16 == 0), positions from 0.
  { name: 'f16 keys, head_dim 64, interleaved', keys: 'f16', D: 64, rope: { theta: 10000, dims: 64, style: 'interleaved' }, start: 0 },
  // Partial rotary dims, positions above 2^16 (three levels of the angle tables).
  { name: 'int8 keys, head_dim 64, half, dims 32, positions around 70,000', keys: 'int8', D: 64,
    rope: { theta: 500000, dims: 32, style: 'half' }, start: 70000 },
  // AVX2 bounds kernel (head_dim % 8 == 0 only).
  { name: 'f32 keys, head_dim 24, half, dims 8', keys: 'f32', D: 24, rope: { theta: 1000, dims: 8, style: 'half' }, start: 300 },
  { name: 'int4 keys, head_dim 32, interleaved', keys: 'int4', D: 32, rope: { theta: 10000, dims: 32, style: 'interleaved' }, start: 5 },
];

const DEVICE_CASES = [
  { ...CASES[0]!, device: 'cuda' as const, name: `${CASES[0]!.name}, device cuda (${target.kind})` },
  { ...CASES[1]!, device: 'cuda' as const, name: `${CASES[1]!.name}, device cuda (${target.kind})` },
];

describe('sparse decode on a rope cache: bounds of the rotated logits, exact attention over the picked blocks', () => {
  for (const c of [...CASES, ...DEVICE_CASES]) {
    it(c.name, () => {
      const rng = testRng(c.name);
      const options: KVCacheOptions = {
        layers: 2, kvHeads: 2, headDim: c.D, queryHeads: 8, blockSize: 16, keys: c.keys, values: 'f16',
        groupSize: Math.min(32, c.D), keySummaries: true, rope: c.rope, threads: 2, device: c.device ?? 'cpu',
      };
      const cache = new KVCache(options);
      try {
        const seq = cache.createSequence();
        const T = 301;
        const positions = gappedPositions(rng, c.start, T);
        // Appended in pieces: summaries fold rows into partly filled blocks.
        for (const [from, to] of [[0, 7], [7, 150], [150, 151], [151, T]] as const) {
          for (const layer of [0, 1]) {
            seq.append(layer, randn(rng, (to - from) * 2 * c.D), randn(rng, (to - from) * 2 * c.D),
              { positions: positions.subarray(from, to) });
          }
        }
        const rule = { tokens: 64, sinks: 4, recent: 20 };
        const picks = checkLayer(seq, 1, randn(rng, 8 * c.D, 2), rule, c.rope, 'decode');
        expect(picks[0]!.length, 'a budget below the stream drops blocks').toBeLessThan(Math.ceil(T / 16));
        checkLayer(seq, 0, randn(rng, 3 * 8 * c.D, 2), rule, c.rope, 'three query tokens (causal)');
        // Eviction rebuilds blocks; the kept rows keep their (gapped) positions.
        seq.evict(EvictionPolicy.random(3), { ratio: 0.6 });
        checkLayer(seq, 0, randn(rng, 8 * c.D, 2), rule, c.rope, 'after eviction');
      } finally {
        cache.dispose();
      }
    });
  }

  it('summaries stay true through fork + copy-on-write, truncate, compaction, export/import and a store load', async () => {
    const rng = testRng('rope upkeep');
    const D = 32;
    const rope: RopeSpec = { theta: 10000, dims: 32, style: 'half' };
    const cache = new KVCache({ layers: 2, kvHeads: 2, headDim: D, queryHeads: 8, blockSize: 8, keys: 'int8', values: 'f16',
      groupSize: 16, keySummaries: true, rope, threads: 2 });
    try {
      const rule = { tokens: 40, sinks: 2, recent: 8 };
      const q = () => randn(rng, 8 * D, 2);
      const seq = cache.createSequence();
      const positions = gappedPositions(rng, 1000, 65);
      let at = 0;
      for (const n of [3, 1, 9, 20, 1, 1, 30]) {
        for (const layer of [0, 1]) {
          seq.append(layer, randn(rng, n * 2 * D), randn(rng, n * 2 * D), { positions: positions.subarray(at, at + n) });
        }
        at += n;
      }
      checkLayer(seq, 0, q(), rule, rope, 'after appends in pieces');
      const child = seq.fork();
      const next = Int32Array.from([positions[64]! + 2, positions[64]! + 3, positions[64]! + 9]);
      child.append(0, randn(rng, 3 * 2 * D, 5), randn(rng, 3 * 2 * D), { positions: next }); // copy-on-write
      checkLayer(child, 0, q(), rule, rope, 'fork after its own append');
      checkLayer(seq, 0, q(), rule, rope, 'parent after the fork appended');
      // truncate takes a position: rows 50.. (then 45..) go, cutting a block the fork shares first.
      seq.truncate(positions[50]!);
      expect(seq.length(0, 0), 'truncate kept rows 0..49').toBe(50);
      checkLayer(seq, 0, q(), rule, rope, 'after truncate, block shared', false);
      child.free();
      seq.truncate(positions[45]!);
      expect(seq.length(0, 0), 'truncate kept rows 0..44').toBe(45);
      checkLayer(seq, 0, q(), rule, rope, 'after truncate, block owned');
      checkLayer(seq, 1, q(), rule, rope, 'after truncate, block owned, layer 1');
      seq.evict(EvictionPolicy.random(3), { ratio: 0.7 });
      checkLayer(seq, 0, q(), rule, rope, 'after eviction');
      // Compaction of a rope cache keeps pre-RoPE keys at stored positions and fits beta.
      for (let i = 0; i < 16; i++) seq.attention(1, randn(rng, 8 * D, 2), { recordQueries: true });
      await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 4 } }).compact(seq, { layers: [1] });
      const beta = [0, 1].flatMap((h) => Array.from(seq.read(1, h).beta));
      expect(beta.some((b) => b !== 0), 'compaction fitted beta').toBe(true);
      checkLayer(seq, 1, q(), rule, rope, 'after compaction (beta in the bounds)');
      const again = cache.importSequence(seq.export());
      checkLayer(again, 1, q(), rule, rope, 'after import');
      checkLayer(again, 0, q(), rule, rope, 'after import, layer 0');
      // A plain prefix loaded from a store is imported chunk by chunk (its own summary pass).
      const plain = cache.createSequence();
      for (const layer of [0, 1]) plain.append(layer, randn(rng, 300 * 2 * D), randn(rng, 300 * 2 * D));
      const store = PrefixStore.memory({ chunkTokens: 64 });
      const ids = Array.from({ length: 300 }, (_, i) => (i * 7919) % 32000);
      await store.put(ids, plain);
      const loaded = await store.load(ids, cache);
      expect(loaded?.kind, 'the store load is a plain prefix').toBe('plain');
      checkLayer(loaded!.sequence, 1, q(), rule, rope, 'after a chunked store load');
      await store.close();
    } finally {
      cache.dispose();
    }
  });

  it("refuses positions: 'rank' with sparse decode, and the cache keeps serving", () => {
    const rng = testRng('rank');
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 16, queryHeads: 2, blockSize: 8, keySummaries: true,
      rope: { theta: 10000 } });
    try {
      const seq = cache.createSequence();
      seq.append(0, randn(rng, 100 * 16), randn(rng, 100 * 16));
      const q = randn(rng, 2 * 16);
      const rule = { tokens: 16, sinks: 0, recent: 8 };
      let err: unknown;
      try {
        seq.attention(0, q, { sparse: rule, positions: 'rank' });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KVCacheError);
      expect((err as KVCacheError).code).toBe('UNSUPPORTED');
      expect(seq.length(0, 0)).toBe(100);
      expect(seq.attention(0, q, { sparse: rule }).length).toBe(2 * 16);
    } finally {
      cache.dispose();
    }
  });
});
