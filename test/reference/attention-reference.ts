// Scalar float64 reference of the cache's attention (api-contract: Sequence.attention):
// causal GQA over per-kv-head streams of rows, logits = q·k / sqrt(D) + beta, softmax, Σ p·v,
// plus the log-sum-exp of the logits. Each kv head has its own rows and its own length.
// Plain loops, no tricks: this is what the kernels are judged against.

/** The rows of one stream (one sequence, layer, kv head). */
export interface StreamRows {
  keys: ArrayLike<number>; // [T, D]
  values: ArrayLike<number>; // [T, D]
  positions: ArrayLike<number>; // [T]
  beta?: ArrayLike<number>; // [T]; 0 when absent
}

export interface AttentionProblem {
  headDim: number;
  queryHeads: number;
  streams: StreamRows[]; // one per kv head; queryHeads must be a multiple of streams.length
  queries: ArrayLike<number>; // [Tq, queryHeads, D]
  /**
   * Position of each query, per kv head: [kvHead][Tq]. Default (the contract): query i sits at the
   * position of the i-th of the last Tq rows of that kv head's stream.
   */
  queryPositions?: ArrayLike<number>[];
}

export interface AttentionResult {
  tq: number;
  out: Float64Array; // [Tq, queryHeads, D]
  lse: Float64Array; // [Tq, queryHeads], natural log of Σ exp(logit); -Infinity if no row is visible
}

export function streamLength(s: StreamRows): number {
  return s.positions.length;
}

export function attentionReference(p: AttentionProblem): AttentionResult {
  const D = p.headDim;
  const QH = p.queryHeads;
  const KVH = p.streams.length;
  if (KVH === 0 || QH % KVH !== 0) throw new Error(`queryHeads ${QH} is not a multiple of kvHeads ${KVH}`);
  if (p.queries.length % (QH * D) !== 0) throw new Error('queries length is not a multiple of queryHeads * headDim');
  const tq = p.queries.length / (QH * D);
  const group = QH / KVH;
  const scale = 1 / Math.sqrt(D);
  const out = new Float64Array(tq * QH * D);
  const lse = new Float64Array(tq * QH);

  for (let kvh = 0; kvh < KVH; kvh++) {
    const s = p.streams[kvh]!;
    const T = streamLength(s);
    if (s.keys.length !== T * D || s.values.length !== T * D) throw new Error(`stream ${kvh}: rows do not match positions`);
    let qpos: ArrayLike<number>;
    if (p.queryPositions) {
      qpos = p.queryPositions[kvh]!;
    } else {
      if (T < tq) throw new Error(`stream ${kvh} holds ${T} rows, fewer than Tq = ${tq}`);
      qpos = Array.from({ length: tq }, (_, i) => s.positions[T - tq + i]!);
    }
    const logits = new Float64Array(T);
    for (let g = 0; g < group; g++) {
      const qh = kvh * group + g;
      for (let i = 0; i < tq; i++) {
        const qOff = (i * QH + qh) * D;
        let max = -Infinity;
        for (let t = 0; t < T; t++) {
          if (s.positions[t]! > qpos[i]!) {
            logits[t] = -Infinity;
            continue;
          }
          let dot = 0;
          for (let d = 0; d < D; d++) dot += p.queries[qOff + d]! * s.keys[t * D + d]!;
          logits[t] = dot * scale + (s.beta ? s.beta[t]! : 0);
          if (logits[t]! > max) max = logits[t]!;
        }
        const oOff = (i * QH + qh) * D;
        if (max === -Infinity) {
          lse[i * QH + qh] = -Infinity;
          continue;
        }
        let sum = 0;
        for (let t = 0; t < T; t++) {
          if (logits[t] === -Infinity) continue;
          const w = Math.exp(logits[t]! - max);
          sum += w;
          for (let d = 0; d < D; d++) out[oOff + d]! += w * s.values[t * D + d]!;
        }
        for (let d = 0; d < D; d++) out[oOff + d]! /= sum;
        lse[i * QH + qh] = max + Math.log(sum);
      }
    }
  }
  return { tq, out, lse };
}

// ---- layout helpers -------------------------------------------------------------------------

/** Rows of kv head h from token-major data [T, kvHeads, D] -> [T, D]. */
export function headRows(data: ArrayLike<number>, kvHeads: number, headDim: number, h: number): Float32Array {
  const T = data.length / (kvHeads * headDim);
  const out = new Float32Array(T * headDim);
  for (let t = 0; t < T; t++) {
    for (let d = 0; d < headDim; d++) out[t * headDim + d] = data[(t * kvHeads + h) * headDim + d]!;
  }
  return out;
}

/** The stored rows of one layer of a sequence (`seq.read`), one stream per kv head, as the reference takes them. */
export function storedStreams(seq: { read(layer: number, h: number): StreamRows }, layer: number, kvHeads: number): StreamRows[] {
  return Array.from({ length: kvHeads }, (_, h) => {
    const r = seq.read(layer, h);
    return { keys: r.keys, values: r.values, positions: r.positions, beta: r.beta };
  });
}

export function concat(parts: ArrayLike<number>[]): Float32Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Float32Array(n);
  let o = 0;
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) out[o + i] = p[i]!;
    o += p.length;
  }
  return out;
}

/** A copy of a stream without row `t` (for checks that a tolerance catches a missing row). */
export function withoutRow(s: StreamRows, t: number, headDim: number): StreamRows {
  const drop = <T extends ArrayLike<number>>(a: T, w: number) => {
    const out: number[] = [];
    for (let i = 0; i < a.length; i++) if (Math.floor(i / w) !== t) out.push(a[i]!);
    return out;
  };
  return {
    keys: drop(s.keys, headDim),
    values: drop(s.values, headDim),
    positions: drop(s.positions, 1),
    beta: s.beta ? drop(s.beta, 1) : undefined,
  };
}
