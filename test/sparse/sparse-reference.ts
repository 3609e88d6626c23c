// Float64 references of sparse decode (kvc/key_summary.h, cpp/core/sparse/sparse_plan.cpp):
// the key summary of a block (per-channel min / max of the stored keys, bf16 rounded outward),
// the logit bound per block, the selection rule, and the rows of the picked blocks.
import { bitsToF32, f32Bits } from '../reference/formats-reference';
import type { StreamRows } from '../reference/attention-reference';

/** bf16 of a float32 value rounded toward -Inf (down) or +Inf (up), as a number. */
export function bf16Outward(x: number, up: boolean): number {
  const u = f32Bits(x);
  let t = u >>> 16;
  if ((u & 0xffff) !== 0) {
    const negative = (u >>> 31) === 1;
    if (up !== negative) t += 1; // away from zero: up for positives, down for negatives
  }
  return bitsToF32((t << 16) >>> 0);
}

export interface SparseRule {
  tokens: number;
  sinks: number;
  recent: number;
}

/**
 * Bound of every block of a stream: scale · Σ_d max(q_d lo_d, q_d hi_d) + max beta, maximized over
 * the queries q ([M][D], in the keys' stored space). keys: [T][D] as stored (dequantized).
 * widen (default 0) moves every hi up and every lo down by widen · (1 + |x|) before the bf16
 * rounding (a negative widen moves them inward): boundsEnvelope's ends.
 */
export function boundsReference(keys: ArrayLike<number>, beta: ArrayLike<number>, T: number, D: number, blockSize: number,
  queries: ArrayLike<number>[], widen = 0): Float64Array {
  const blocks = Math.ceil(T / blockSize);
  const out = new Float64Array(blocks);
  const scale = 1 / Math.sqrt(D);
  for (let b = 0; b < blocks; b++) {
    const r0 = b * blockSize;
    const r1 = Math.min(T, r0 + blockSize);
    const lo = new Float64Array(D).fill(Infinity);
    const hi = new Float64Array(D).fill(-Infinity);
    let maxBeta = -Infinity;
    for (let r = r0; r < r1; r++) {
      for (let d = 0; d < D; d++) {
        lo[d] = Math.min(lo[d]!, keys[r * D + d]!);
        hi[d] = Math.max(hi[d]!, keys[r * D + d]!);
      }
      maxBeta = Math.max(maxBeta, beta[r]!);
    }
    for (let d = 0; d < D; d++) {
      lo[d] = bf16Outward(lo[d]! - widen * (1 + Math.abs(lo[d]!)), false);
      hi[d] = bf16Outward(hi[d]! + widen * (1 + Math.abs(hi[d]!)), true);
    }
    let best = -Infinity;
    for (const q of queries) {
      let acc = 0;
      for (let d = 0; d < D; d++) acc += Math.max(q[d]! * lo[d]!, q[d]! * hi[d]!);
      best = Math.max(best, acc);
    }
    out[b] = scale * best + maxBeta;
  }
  return out;
}

/** The blocks sparse attention reads, from the bounds (ties: lower index first). */
export function selectReference(bounds: ArrayLike<number>, T: number, blockSize: number, rule: SparseRule, tq: number): number[] {
  const blocks = bounds.length;
  const budget = Math.ceil(rule.tokens / blockSize);
  if (budget >= blocks) return Array.from({ length: blocks }, (_, b) => b);
  const sinkBlocks = Math.min(blocks, Math.ceil(rule.sinks / blockSize));
  const firstRecent = Math.floor(Math.max(0, T - Math.max(rule.recent, tq, 1)) / blockSize);
  const forced = new Set<number>();
  for (let b = 0; b < sinkBlocks; b++) forced.add(b);
  for (let b = Math.max(firstRecent, sinkBlocks); b < blocks; b++) forced.add(b);
  const candidates: number[] = [];
  for (let b = sinkBlocks; b < firstRecent; b++) candidates.push(b);
  candidates.sort((a, b) => (bounds[b]! - bounds[a]!) || a - b);
  const rest = Math.max(0, budget - forced.size);
  for (const b of candidates.slice(0, rest)) forced.add(b);
  return [...forced].sort((a, b) => a - b);
}

/** The rows of the given blocks of a stream (keys/values [T][D], positions, beta). */
export function pickedRows(s: Required<StreamRows>, D: number, blockSize: number, blocks: ArrayLike<number>): Required<StreamRows> {
  const T = s.positions.length;
  const rows: number[] = [];
  for (let i = 0; i < blocks.length; i++) {
    for (let r = blocks[i]! * blockSize; r < Math.min(T, (blocks[i]! + 1) * blockSize); r++) rows.push(r);
  }
  const keys = new Float32Array(rows.length * D);
  const values = new Float32Array(rows.length * D);
  const positions = new Int32Array(rows.length);
  const beta = new Float32Array(rows.length);
  rows.forEach((r, j) => {
    for (let d = 0; d < D; d++) {
      keys[j * D + d] = s.keys[r * D + d]!;
      values[j * D + d] = s.values[r * D + d]!;
    }
    positions[j] = s.positions[r]!;
    beta[j] = s.beta[r]!;
  });
  return { keys, values, positions, beta };
}

/**
 * The range a block's bound may take when the backend computes the keys it summarizes in
 * float32 (RoPE applied by the cache) with an error of at most eps · (1 + |k|) per element:
 * [lower, upper] of boundsReference with every key nudged by that error in the direction that
 * lowers (or raises) the bound. bf16 outward rounding is monotone, so any key within the error
 * lands its bound inside the range; a wrong rotation (another position, another pairing, none)
 * moves it far outside.
 */
export function boundsEnvelope(keys: ArrayLike<number>, beta: ArrayLike<number>, T: number, D: number, blockSize: number,
  queries: ArrayLike<number>[], eps: number): { lower: Float64Array; upper: Float64Array } {
  // The bound grows with hi and falls with lo: moving both inward gives the lower end.
  return {
    lower: boundsReference(keys, beta, T, D, blockSize, queries, -eps),
    upper: boundsReference(keys, beta, T, D, blockSize, queries, eps),
  };
}
