// Float64 reference of attention over the rows a lowRank + rope cache stores (pre-RoPE, as
// seq.read returns them): RoPE applied by the given positions, then plain causal GQA attention.
import type { Sequence } from '../../lib/index';
import { attentionReference, type StreamRows } from '../reference/attention-reference';
import { ropeF64, type RopeSpec } from '../reference/rope-reference';

/** Attention of the stored (pre-RoPE) rows of one layer: RoPE by the given positions, then plain attention. */
export function reference(
  seq: Sequence, layer: number, KVH: number, D: number, QH: number, r: RopeSpec, queries: Float32Array,
  ropePos: (t: number, rows: number) => number, rowPos: (row: number, stored: number) => number,
): Float64Array {
  return referenceWithLse(seq, layer, KVH, D, QH, r, queries, ropePos, rowPos).out;
}

export function referenceWithLse(
  seq: Sequence, layer: number, KVH: number, D: number, QH: number, r: RopeSpec, queries: Float32Array,
  ropePos: (t: number, rows: number) => number, rowPos: (row: number, stored: number) => number,
): { out: Float64Array; lse: Float64Array } {
  const g = QH / KVH;
  const tq = queries.length / (QH * D);
  const streams: StreamRows[] = [];
  const qAll = new Float64Array(queries.length);
  for (let h = 0; h < KVH; h++) {
    const s = seq.read(layer, h);
    const T = s.positions.length;
    const keys = new Float64Array(T * D);
    for (let t = 0; t < T; t++) keys.set(ropeF64(s.keys, t * D, D, r, rowPos(t, s.positions[t]!)), t * D);
    streams.push({ keys, values: s.values, positions: s.positions, beta: s.beta });
    for (let t = 0; t < tq; t++) {
      for (let j = 0; j < g; j++) {
        const off = (t * QH + h * g + j) * D;
        const p = ropePos(t, T);
        qAll.set(ropeF64(queries, off, D, r, p < 0 ? s.positions[T - tq + t]! : p), off);
      }
    }
  }
  return attentionReference({ headDim: D, queryHeads: QH, streams, queries: qAll });
}

export const STORED = (_t: number, _n: number) => -1;
export const AS_STORED = (_row: number, stored: number) => stored;
