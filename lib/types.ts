// Public option, result and statistics types of kvcompact.

/** Storage format of keys or values (ARCHITECTURE §3). */
export type Storage = 'f32' | 'f16' | 'bf16' | 'int8' | 'int4';
export type Device = 'cpu' | 'cuda';

export interface KVCacheOptions {
  /** Transformer layers. */
  layers: number;
  /** Key/value heads per layer. */
  kvHeads: number;
  /** Elements per head (even). */
  headDim: number;
  /** Query heads per layer: a multiple of kvHeads (grouped-query attention). Default kvHeads. */
  queryHeads?: number;
  /** Rows (tokens) per block. Default 32. */
  blockSize?: number;
  /** Storage of keys. Default 'f16'. */
  keys?: Storage;
  /** Storage of values. Default 'f16'. */
  values?: Storage;
  /** Quantization group along headDim for int8/int4 (an even divisor of headDim). Default min(32, headDim). */
  groupSize?: number;
  /** Hadamard rotation before storage: true rotates keys; or choose per tensor. Default false. */
  rotate?: boolean | { keys?: boolean; values?: boolean };
  /** Seed of the rotation's sign flips (recorded in exports). */
  rotationSeed?: number;
  /** Budget of the block pool in bytes. Default: the machine's physical memory. */
  maxBytes?: number;
  /** 'cpu' (default) or 'cuda'. */
  device?: Device;
  /** CPU threads for attention (the caller's thread included). Default: available parallelism. */
  threads?: number;
  /** Query vectors kept per stream by `recordQueries` (uniform reservoir sample). Default 512. */
  queryReservoir?: number;
  /** Newest query vectors kept per stream by `recordQueries`. Default 64. */
  recentQueries?: number;
}

/** The options a cache runs with, all defaults filled in. */
export interface KVCacheConfig {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly queryHeads: number;
  readonly blockSize: number;
  readonly keys: Storage;
  readonly values: Storage;
  readonly groupSize: number;
  readonly rotateKeys: boolean;
  readonly rotateValues: boolean;
  readonly rotationSeed: number;
  readonly maxBytes: number;
  readonly device: Device;
  readonly threads: number;
  readonly queryReservoir: number;
  readonly recentQueries: number;
}

export interface AttentionOptions {
  /** Write the output here instead of allocating (length Tq × queryHeads × headDim). */
  out?: Float32Array;
  /** Filled with the log-sum-exp of the logits per (query token, query head): length Tq × queryHeads. */
  lse?: Float32Array;
  /**
   * Log the queries per stream (all query heads of a GQA group pooled): a uniform reservoir
   * sample (`queryReservoir` vectors per stream, the Compactor's default reference queries)
   * and the newest `recentQueries` vectors (SnapKV's window, TOVA's last query).
   */
  recordQueries?: boolean;
  /** Add each row's attention probability (summed over its GQA group and the Tq queries) to the stream's scores (H2O). */
  accumulateScores?: boolean;
}

export interface AppendOptions {
  /** Token positions of the T rows; default nextPosition(layer), +1, ... */
  positions?: Int32Array | readonly number[];
}

/** Rows of one stream, dequantized (and rotated back) for inspection. */
export interface StreamRows {
  /** [length, headDim] */
  keys: Float32Array;
  /** [length, headDim] */
  values: Float32Array;
  /** [length] logit bias per row (0 unless compacted). */
  beta: Float32Array;
  /** [length] original token positions. */
  positions: Int32Array;
}

export interface CacheStats {
  /** Live sequences. */
  sequences: number;
  /** Sum of stream lengths over live sequences (forks count shared rows again). */
  rows: number;
  /** rows / (layers × kvHeads): token-equivalents held. */
  tokens: number;
  /** Distinct blocks in use. */
  blocksUsed: number;
  /** Blocks that can still be allocated within maxBytes. */
  blocksFree: number;
  blockBytes: number;
  /** blocksUsed × blockBytes. */
  bytesUsed: number;
  /** bytesUsed / tokens (0 when empty). */
  bytesPerToken: number;
  /** Pool memory committed from the system (grows in 2 MiB steps, never shrinks). */
  committedBytes: number;
  /** The budget, rounded down to whole blocks. */
  maxBytes: number;
}

export interface Devices {
  cpu: { available: true; threads: number; simd: string };
  cuda: { available: boolean; compiled: boolean; reason?: string; name?: string; devices?: number; totalMemory?: number };
}
