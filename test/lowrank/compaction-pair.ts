// One compaction scenario run twice: a low-rank f32 cache (explicit bases of key rank R and
// value rank RV; RV = headDim keeps values unprojected) and a full-rank f32 cache holding its
// lifted rows, with the same recorded queries, both compacted alike. Attention Matching
// then picks the same rows (same logits) and fits the same weights and values. Shared by the
// equal- and unequal-rank compaction tests.
import { Compactor, KVCache, type Sequence, type StreamRows } from '../../lib/index';
import { randn, type Rng } from '../reference/random';
import { orthonormal } from './lowrank-reference';

export interface CompactionPair {
  low: KVCache;
  full: KVCache;
  a: Sequence;  // the low-rank sequence
  rows: StreamRows;  // its rows before compaction (lifted)
  valueBasis: Float32Array;  // [D][RV], empty when values are unprojected
  ra: StreamRows;  // rows after compaction: low-rank (lifted), full-rank
  rb: StreamRows;
}

export async function compactPair(rng: Rng, D: number, R: number, RV: number): Promise<CompactionPair> {
  const opts = { layers: 1, kvHeads: 1, queryHeads: 2, headDim: D, keys: 'f32', values: 'f32', groupSize: 8, threads: 1 } as const;
  const low = new KVCache({ ...opts, lowRank: { keys: R, values: RV, calibrationRows: 0 } });
  const full = new KVCache(opts);
  const a = low.createSequence();
  const b = full.createSequence();
  const bases = { keys: orthonormal(rng, D, R), values: RV < D ? orthonormal(rng, D, RV) : new Float32Array(0) };
  a.setBases(0, 0, bases);
  const T = 96;
  a.append(0, randn(rng, T * D, 2), randn(rng, T * D));
  const rows = a.read(0, 0);
  b.append(0, rows.keys, rows.values);
  for (let i = 0; i < 24; i++) {
    const q = randn(rng, 2 * D, 2);
    a.attention(0, q, { recordQueries: true });
    b.attention(0, q, { recordQueries: true });
  }
  const compactor = new Compactor({ ratio: 0.25, protect: { sinks: 2, recent: 4 } });
  await compactor.compact(a);
  await compactor.compact(b);
  return { low, full, a, rows, valueBasis: bases.values, ra: a.read(0, 0), rb: b.read(0, 0) };
}

/**
 * How far two fits of the same kept rows differ, as the kept rows' weights w = e^beta and
 * weighted values w v (what the attention output depends on), relative to max w and max |v|.
 * Two f32 fits of the same problems differ by an absolute amount in w (about cond · 1e-7 ·
 * max w); beta = log w amplifies that by 1/w on rows whose weight is near minWeight (beta
 * -4.5: 100x), and their values are as weakly determined, so beta and v themselves are no
 * measure of the fit (comparing them failed on about 1 seed in 30).
 */
export function fitDifference(a: StreamRows, b: StreamRows, D: number): { weights: number; weightedValues: number } {
  const wa = Array.from(a.beta, Math.exp), wb = Array.from(b.beta, Math.exp);
  const wMax = Math.max(...wb);
  let vMax = 0, weights = 0, weighted = 0;
  for (const x of b.values) vMax = Math.max(vMax, Math.abs(x));
  for (let j = 0; j < wb.length; j++) {
    weights = Math.max(weights, Math.abs(wa[j]! - wb[j]!));
    for (let d = 0; d < D; d++) weighted = Math.max(weighted, wb[j]! * Math.abs(a.values[j * D + d]! - b.values[j * D + d]!));
  }
  return { weights: weights / wMax, weightedValues: weighted / (wMax * vMax) };
}
