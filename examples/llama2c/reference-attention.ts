// Plain-JS reference attention: f32 rows stored as given, full causal softmax
// attention accumulated in double. The yardstick every cache format is judged by.
import type { AttentionBackend, AttentionDims } from './model';

export class ReferenceAttention implements AttentionBackend {
  readonly dims: AttentionDims;
  private readonly rowFloats: number; // kvHeads * headDim
  private keys: Float32Array[]; // per layer [capacity, kvHeads, headDim]
  private values: Float32Array[];
  private lengths: number[];

  constructor(dims: AttentionDims) {
    const { layers, kvHeads, headDim, queryHeads } = dims;
    for (const [name, v] of Object.entries(dims)) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`ReferenceAttention: ${name} must be a positive integer, got ${v}`);
    }
    if (queryHeads % kvHeads !== 0) {
      throw new RangeError(`ReferenceAttention: queryHeads ${queryHeads} is not a multiple of kvHeads ${kvHeads}`);
    }
    this.dims = { ...dims };
    this.rowFloats = kvHeads * headDim;
    this.keys = Array.from({ length: layers }, () => new Float32Array(0));
    this.values = Array.from({ length: layers }, () => new Float32Array(0));
    this.lengths = new Array<number>(layers).fill(0);
  }

  length(layer: number): number {
    return this.lengths[this.checkLayer(layer)]!;
  }

  private checkLayer(layer: number): number {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.dims.layers) {
      throw new RangeError(`layer ${layer} is out of range [0, ${this.dims.layers})`);
    }
    return layer;
  }

  append(layer: number, keys: Float32Array, values: Float32Array, startPos: number): void {
    this.checkLayer(layer);
    const rf = this.rowFloats;
    if (keys.length % rf !== 0 || values.length !== keys.length) {
      throw new RangeError(`append: keys (${keys.length}) and values (${values.length}) must both be [T, ${this.dims.kvHeads}, ${this.dims.headDim}]`);
    }
    const len = this.lengths[layer]!;
    if (startPos !== len) {
      throw new RangeError(`append: layer ${layer} holds ${len} rows, so the next position is ${len}, not ${startPos}`);
    }
    const T = keys.length / rf;
    const need = (len + T) * rf;
    if (need > this.keys[layer]!.length) {
      const cap = Math.max(need, 2 * this.keys[layer]!.length, 64 * rf);
      const k = new Float32Array(cap);
      const v = new Float32Array(cap);
      k.set(this.keys[layer]!.subarray(0, len * rf));
      v.set(this.values[layer]!.subarray(0, len * rf));
      this.keys[layer] = k;
      this.values[layer] = v;
    }
    this.keys[layer]!.set(keys, len * rf);
    this.values[layer]!.set(values, len * rf);
    this.lengths[layer] = len + T;
  }

  attention(layer: number, queries: Float32Array, tq: number): Float32Array {
    this.checkLayer(layer);
    const { kvHeads, headDim: D, queryHeads } = this.dims;
    const L = this.lengths[layer]!;
    if (!Number.isInteger(tq) || tq < 1 || tq > L) {
      throw new RangeError(`attention: tq ${tq} must be in [1, ${L}] (rows in layer ${layer})`);
    }
    if (queries.length !== tq * queryHeads * D) {
      throw new RangeError(`attention: queries hold ${queries.length} values, expected [${tq}, ${queryHeads}, ${D}]`);
    }
    const K = this.keys[layer]!;
    const V = this.values[layer]!;
    const rf = this.rowFloats;
    const group = queryHeads / kvHeads;
    const scale = 1 / Math.sqrt(D);
    const out = new Float32Array(queries.length);
    const scores = new Float64Array(L);
    const acc = new Float64Array(D);
    for (let i = 0; i < tq; i++) {
      const pos = L - tq + i; // causal: rows 0..pos
      for (let h = 0; h < queryHeads; h++) {
        const qOff = (i * queryHeads + h) * D;
        const kvOff = Math.floor(h / group) * D;
        let max = -Infinity;
        for (let j = 0; j <= pos; j++) {
          const kOff = j * rf + kvOff;
          let s = 0;
          for (let d = 0; d < D; d++) s += queries[qOff + d]! * K[kOff + d]!;
          s *= scale;
          scores[j] = s;
          if (s > max) max = s;
        }
        let sum = 0;
        acc.fill(0);
        for (let j = 0; j <= pos; j++) {
          const p = Math.exp(scores[j]! - max);
          sum += p;
          const vOff = j * rf + kvOff;
          for (let d = 0; d < D; d++) acc[d] = acc[d]! + p * V[vOff + d]!;
        }
        for (let d = 0; d < D; d++) out[qOff + d] = acc[d]! / sum;
      }
    }
    return out;
  }

  truncate(n: number): void {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`truncate: ${n} must be a non-negative integer`);
    this.lengths = this.lengths.map((len) => Math.min(len, n));
  }

  reset(): void {
    this.lengths.fill(0);
  }
}
