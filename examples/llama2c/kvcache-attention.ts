// AttentionBackend over a kvcompact Sequence: the model's K/V go into the library's
// paged (optionally quantized) cache and attention is computed by the library.
// Deliberately thin, so evaluations measure the library, not this adapter.
import { KVCache, Sequence } from '../../lib/index';
import type { AttentionBackend, AttentionDims } from './model';

export type KVCacheOptions = NonNullable<ConstructorParameters<typeof KVCache>[0]>;
/** everything but the shape, which comes from the model: storage formats, groupSize, rotate, blockSize, ... */
export type CacheSettings = Partial<Omit<KVCacheOptions, 'layers' | 'kvHeads' | 'headDim' | 'queryHeads'>>;
export type AttentionCallOptions = NonNullable<Parameters<Sequence['attention']>[2]>;

export class KVCacheAttention implements AttentionBackend {
  readonly cache: KVCache;
  private seq: Sequence;

  /**
   * @param dims shape from the model (attentionDims(config))
   * @param settings cache options, e.g. { keys: 'int8', values: 'int4', groupSize: 8, rotate: true }
   * @param attentionOptions passed to every seq.attention call (e.g. { recordQueries: true })
   */
  constructor(
    readonly dims: AttentionDims,
    settings: CacheSettings = {},
    readonly attentionOptions?: AttentionCallOptions,
  ) {
    this.cache = new KVCache({ ...settings, ...dims } as KVCacheOptions);
    this.seq = this.cache.createSequence();
  }

  /** the current sequence, for eviction, compaction or inspection between forward calls */
  get sequence(): Sequence {
    return this.seq;
  }

  /** a cache with the rope option rotates queries and keys itself */
  get appliesRope(): boolean {
    return this.cache.config.rope !== null;
  }

  append(layer: number, keys: Float32Array, values: Float32Array, startPos: number): void {
    const T = keys.length / (this.dims.kvHeads * this.dims.headDim);
    const positions = new Int32Array(T);
    for (let i = 0; i < T; i++) positions[i] = startPos + i;
    this.seq.append(layer, keys, values, { positions });
  }

  attention(layer: number, queries: Float32Array, _tq: number): Float32Array {
    return this.seq.attention(layer, queries, this.attentionOptions);
  }

  truncate(n: number): void {
    this.seq.truncate(n);
  }

  reset(): void {
    this.seq.free();
    this.seq = this.cache.createSequence();
  }

  /** free the sequence and the cache */
  dispose(): void {
    this.seq.free();
    this.cache.dispose();
  }
}
