// Synthetic LLM-like streams for the compaction tests and bench/compactor.bench.ts, ported
// from test/native/compaction/synthetic_stream.h (the native quality table's generator) and
// extended to several kv heads: keys that drift along the sequence (AR(1), ρ = 0.6) with three
// outlier channels ×8, an attention sink at row 0 about 8 logits above the rest for the mean
// query direction, queries that each look at a recent row (mean distance 48) and at one of 48
// salient rows anywhere in the context (retrieval), and Gaussian values. Reference and
// held-out queries come from the same distribution. Layouts are the cache's token-major ones.
import { StreamRng } from '../../bench/support/synthetic-streams';

export interface LlmStreamOptions {
  tokens: number; // T
  kvHeads: number;
  headDim: number; // D
  queries: number; // reference query tokens n
  heldOut: number; // held-out query tokens
}

export interface LlmStreams {
  keys: Float32Array; // [T, kvHeads, D]
  values: Float32Array; // [T, kvHeads, D]
  queries: Float32Array; // [n, kvHeads, D] (one query head per kv head)
  heldOut: Float32Array; // [m, kvHeads, D]
}

export function llmStreams(o: LlmStreamOptions, seed: number): LlmStreams {
  const { tokens: T, kvHeads: H, headDim: D } = o;
  const keys = new Float32Array(T * H * D);
  const values = new Float32Array(T * H * D);
  const queries = new Float32Array(o.queries * H * D);
  const heldOut = new Float32Array(o.heldOut * H * D);
  const outliers = [5 % D, 37 % D, 90 % D];
  for (let h = 0; h < H; h++) {
    const rng = new StreamRng((seed * 7919 + h * 104729) >>> 0);
    const u = new Float64Array(D);
    let norm = 0;
    for (let d = 0; d < D; d++) norm += (u[d] = rng.randn()) ** 2;
    for (let d = 0; d < D; d++) u[d]! /= Math.sqrt(norm);
    const rho = 0.6;
    const inn = Math.sqrt(1 - rho * rho);
    const prev = new Float64Array(D);
    for (let d = 0; d < D; d++) prev[d] = rng.randn();
    for (let t = 0; t < T; t++) {
      const base = (t * H + h) * D;
      for (let d = 0; d < D; d++) {
        prev[d] = rho * prev[d]! + inn * rng.randn();
        keys[base + d] = prev[d]!;
      }
      for (const c of outliers) keys[base + c]! *= 8;
    }
    for (let d = 0; d < D; d++) keys[h * D + d] = 30 * u[d]! + 0.3 * rng.randn();
    for (let t = 0; t < T; t++) for (let d = 0; d < D; d++) values[(t * H + h) * D + d] = rng.randn();
    const salient = Array.from({ length: 48 }, () => 1 + (rng.u32() % (T - 1)));
    const make = (out: Float32Array, count: number) => {
      for (let i = 0; i < count; i++) {
        const back = Math.min(T - 1, Math.floor(-48 * Math.log(1 - rng.uniform())));
        const kr = ((T - 1 - back) * H + h) * D;
        const ka = (salient[rng.u32() % 48]! * H + h) * D;
        const gr = 0.4 + 0.3 * rng.uniform();
        const ga = 0.5 * rng.uniform();
        const q = (i * H + h) * D;
        for (let d = 0; d < D; d++) {
          const w = outliers.includes(d) ? 1 / 8 : 1;
          out[q + d] = 3 * u[d]! + 0.5 * rng.randn() + w * (gr * keys[kr + d]! + ga * keys[ka + d]!);
        }
      }
    };
    make(queries, o.queries);
    make(heldOut, o.heldOut);
  }
  return { keys, values, queries, heldOut };
}

/** Rows of query/kv head h of a token-major [N, heads, D] array, as [N, D]. */
export function headSlice(data: Float32Array, heads: number, D: number, h: number): Float32Array {
  const n = data.length / (heads * D);
  const out = new Float32Array(n * D);
  for (let i = 0; i < n; i++) out.set(data.subarray((i * heads + h) * D, (i * heads + h + 1) * D), i * D);
  return out;
}

/**
 * Reference attention (float64 accumulation) of queries [m, D] over rows keys/values [T, D]
 * with per-row bias beta [T]: softmax(q·k/√D + beta) V, all rows visible. Returns [m, D].
 */
export function attend(queries: Float32Array, keys: Float32Array, values: Float32Array, beta: Float32Array | null, D: number): Float64Array {
  const m = queries.length / D;
  const T = keys.length / D;
  const out = new Float64Array(m * D);
  const logits = new Float64Array(T);
  const scale = 1 / Math.sqrt(D);
  for (let i = 0; i < m; i++) {
    const q = queries.subarray(i * D, (i + 1) * D);
    let max = -Infinity;
    for (let t = 0; t < T; t++) {
      let s = 0;
      const k = t * D;
      for (let d = 0; d < D; d++) s += q[d]! * keys[k + d]!;
      const l = s * scale + (beta ? beta[t]! : 0);
      logits[t] = l;
      if (l > max) max = l;
    }
    let z = 0;
    const o = i * D;
    for (let t = 0; t < T; t++) {
      const e = Math.exp(logits[t]! - max);
      z += e;
      if (e < 1e-12) continue;
      const v = t * D;
      for (let d = 0; d < D; d++) out[o + d] = out[o + d]! + e * values[v + d]!;
    }
    for (let d = 0; d < D; d++) out[o + d] = out[o + d]! / z;
  }
  return out;
}

/** ‖a − b‖_F / ‖b‖_F */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}
