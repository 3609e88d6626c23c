// An attention backend that records what the model hands it (RoPE'd keys, values and
// queries, per layer, in call order) while another backend attends: real-model streams for
// the quality measurements.
import type { AttentionBackend } from './model';

export class RecordingAttention implements AttentionBackend {
  /** Per layer, the arrays of each call in order: [tokens, kvHeads, headDim] / [tq, queryHeads, headDim]. */
  keys: Float32Array[][] = [];
  values: Float32Array[][] = [];
  queries: Float32Array[][] = [];

  constructor(readonly inner: AttentionBackend, readonly layers: number) {
    this.clear();
  }

  append(layer: number, keys: Float32Array, values: Float32Array, startPos: number): void {
    this.keys[layer]!.push(keys.slice());
    this.values[layer]!.push(values.slice());
    this.inner.append(layer, keys, values, startPos);
  }

  attention(layer: number, queries: Float32Array, tq: number): Float32Array {
    this.queries[layer]!.push(queries.slice());
    return this.inner.attention(layer, queries, tq);
  }

  /** A new sequence: the inner backend's and the recordings. */
  reset(): void {
    this.inner.reset();
    this.clear();
  }

  /** Per layer, how many query calls are recorded so far (for queriesSince). */
  marks(): number[] {
    return this.queries.map((q) => q.length);
  }

  /** Per layer, the queries recorded after `marks`, concatenated. */
  queriesSince(marks: number[]): Float32Array[] {
    return this.queries.map((q, l) => concat(q.slice(marks[l]!)));
  }

  private clear(): void {
    const perLayer = () => Array.from({ length: this.layers }, () => [] as Float32Array[]);
    this.keys = perLayer();
    this.values = perLayer();
    this.queries = perLayer();
  }
}

export function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
