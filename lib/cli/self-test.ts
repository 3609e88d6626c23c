// The doctor's self-test: appends random rows, runs decode and prefill attention, and compares
// the output with a plain JavaScript attention over the rows the cache stores (seq.read()
// dequantizes them, so every storage format is held to float rounding, not to its
// quantization error), and the stored rows with the appended ones (exact for f32; within the
// format's step otherwise). Runs rounds of fresh random inputs until the time budget is spent.
import { KVCache } from '../kv-cache';
import type { Device, Storage } from '../types';

export interface SelfTestResult {
  device: Device;
  checks: number;
  failures: string[];
  milliseconds: number;
}

const LAYERS = 2;
const KV_HEADS = 2;
const QUERY_HEADS = 4;
const HEAD_DIM = 64;

/** Deterministic uniform numbers in [-1, 1) (xorshift32), seeded per round. */
function randoms(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return out;
}

/**
 * Attention of `tq` queries [tq, QUERY_HEADS, HEAD_DIM] over the rows of each kv head, in f64:
 * query i sits at the position of the i-th of the last tq rows; a row is visible when its
 * position is not later; logits get the row's beta.
 */
export function referenceAttention(
  queries: Float32Array,
  tq: number,
  streams: ReadonlyArray<{ keys: Float32Array; values: Float32Array; beta: Float32Array; positions: Int32Array }>,
): Float64Array {
  const out = new Float64Array(tq * QUERY_HEADS * HEAD_DIM);
  const group = QUERY_HEADS / KV_HEADS;
  const scale = 1 / Math.sqrt(HEAD_DIM);
  for (let h = 0; h < QUERY_HEADS; h++) {
    const s = streams[Math.floor(h / group)]!;
    const rows = s.positions.length;
    for (let i = 0; i < tq; i++) {
      const at = s.positions[rows - tq + i]!;
      const q = (i * QUERY_HEADS + h) * HEAD_DIM;
      const logits = new Float64Array(rows).fill(-Infinity);
      let max = -Infinity;
      for (let r = 0; r < rows; r++) {
        if (s.positions[r]! > at) continue;
        let dot = 0;
        for (let d = 0; d < HEAD_DIM; d++) dot += queries[q + d]! * s.keys[r * HEAD_DIM + d]!;
        logits[r] = dot * scale + s.beta[r]!;
        max = Math.max(max, logits[r]!);
      }
      let sum = 0;
      for (let r = 0; r < rows; r++) {
        const w = Math.exp(logits[r]! - max);
        sum += w;
        for (let d = 0; d < HEAD_DIM; d++) out[q + d]! += w * s.values[r * HEAD_DIM + d]!;
      }
      for (let d = 0; d < HEAD_DIM; d++) out[q + d]! /= sum;
    }
  }
  return out;
}

// How far a stored element may be from the appended one: exact for f32, half a step of the
// format for the others (f16/bf16 relative rounding; int8 absmax/127 per group of 32 on
// inputs in [-1, 1); int4 (max - min)/15 per group).
const STORED_TOLERANCE: Record<Storage, (x: number) => number> = {
  f32: () => 0,
  f16: (x) => Math.abs(x) * 2 ** -11 + 2 ** -25,
  bf16: (x) => Math.abs(x) * 2 ** -8 + 2 ** -133,
  int8: () => 0.5 / 127 + 1e-6,
  int4: () => (0.5 * 2) / 15 + 1e-6,
};

function round(cache: KVCache, storage: Storage, seed: number, failures: string[]): number {
  let checks = 0;
  const seq = cache.createSequence();
  try {
    const tokens = 40 + (seed % 50);
    const keys = randoms(tokens * KV_HEADS * HEAD_DIM, seed);
    const values = randoms(tokens * KV_HEADS * HEAD_DIM, seed ^ 0x9e3779b9);
    for (let layer = 0; layer < LAYERS; layer++) {
      // Two appends: a prefill chunk, then single decode rows.
      const split = tokens - 3;
      seq.append(layer, keys.subarray(0, split * KV_HEADS * HEAD_DIM), values.subarray(0, split * KV_HEADS * HEAD_DIM));
      for (let t = split; t < tokens; t++) {
        seq.append(layer, keys.subarray(t * KV_HEADS * HEAD_DIM, (t + 1) * KV_HEADS * HEAD_DIM), values.subarray(t * KV_HEADS * HEAD_DIM, (t + 1) * KV_HEADS * HEAD_DIM));
      }
      const streams = [];
      for (let g = 0; g < KV_HEADS; g++) {
        const rows = seq.read(layer, g);
        streams.push(rows);
        let worst = 0;
        for (let t = 0; t < tokens; t++) {
          for (let d = 0; d < HEAD_DIM; d++) {
            const i = (t * KV_HEADS + g) * HEAD_DIM + d;
            const j = t * HEAD_DIM + d;
            worst = Math.max(worst, Math.abs(rows.keys[j]! - keys[i]!) - STORED_TOLERANCE[storage](keys[i]!));
            worst = Math.max(worst, Math.abs(rows.values[j]! - values[i]!) - STORED_TOLERANCE[storage](values[i]!));
          }
        }
        checks++;
        if (rows.positions.length !== tokens || worst > 0) {
          failures.push(`${cache.config.device} ${storage}: stored rows of layer ${layer} head ${g} differ from the appended ones by ${worst} beyond the format's step`);
        }
      }
      for (const tq of [1, 4]) {
        const queries = randoms(tq * QUERY_HEADS * HEAD_DIM, seed * 31 + tq + layer);
        const out = seq.attention(layer, queries);
        const ref = referenceAttention(queries, tq, streams);
        let worst = 0;
        for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(out[i]! - ref[i]!));
        checks++;
        // Outputs are averages of values in [-1, 1): the kernels' f32 sums stay within 2e-7 of
        // the f64 reference here (measured over all formats), a tenth of the bound.
        if (!(worst <= 2e-6)) failures.push(`${cache.config.device} ${storage}: attention (Tq=${tq}, layer ${layer}) differs from the reference by ${worst}`);
      }
    }
  } finally {
    seq.free();
  }
  return checks;
}

/** Runs rounds on `device` until `budgetMs` is spent (at least one round per storage format). */
export function selfTest(device: Device, budgetMs: number): SelfTestResult {
  const start = performance.now();
  const failures: string[] = [];
  let checks = 0;
  const storages: Storage[] = ['f32', 'f16', 'bf16', 'int8', 'int4'];
  const caches = storages.map(
    (s) => new KVCache({ layers: LAYERS, kvHeads: KV_HEADS, queryHeads: QUERY_HEADS, headDim: HEAD_DIM, blockSize: 16, keys: s, values: s, device, threads: 2 }),
  );
  try {
    for (let r = 1; r === 1 || performance.now() - start < budgetMs; r++) {
      for (let i = 0; i < storages.length; i++) checks += round(caches[i]!, storages[i]!, r * 7919 + i, failures);
      if (failures.length) break;
    }
  } finally {
    for (const c of caches) c.dispose();
  }
  return { device, checks, failures, milliseconds: performance.now() - start };
}
