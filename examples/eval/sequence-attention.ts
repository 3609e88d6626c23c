// AttentionBackend over a given kvcompact Sequence (e.g. a fork of a shared, prefilled
// prefix), with attention options that can change between calls.
import type { Sequence } from '../../lib/index';
import type { AttentionBackend, AttentionDims } from '../llama2c/model';

export type AttentionCallOptions = NonNullable<Parameters<Sequence['attention']>[2]>;

export class SequenceAttention implements AttentionBackend {
  constructor(
    readonly dims: AttentionDims,
    public sequence: Sequence,
    public attentionOptions: AttentionCallOptions | undefined = undefined,
  ) {}

  /** a cache with the rope option rotates queries and keys itself */
  get appliesRope(): boolean {
    return this.sequence.cache.config.rope !== null;
  }

  append(layer: number, keys: Float32Array, values: Float32Array, startPos: number): void {
    const T = keys.length / (this.dims.kvHeads * this.dims.headDim);
    const positions = new Int32Array(T);
    for (let i = 0; i < T; i++) positions[i] = startPos + i;
    this.sequence.append(layer, keys, values, { positions });
  }

  attention(layer: number, queries: Float32Array, _tq: number): Float32Array {
    return this.sequence.attention(layer, queries, this.attentionOptions);
  }

  truncate(n: number): void {
    this.sequence.truncate(n);
  }

  reset(): void {
    const cache = this.sequence.cache;
    this.sequence.free();
    this.sequence = cache.createSequence();
  }

  /** rows held, summed over layers and kv heads */
  rows(): number {
    let n = 0;
    for (let l = 0; l < this.dims.layers; l++) for (const len of this.sequence.lengths(l)) n += len;
    return n;
  }
}
