// Public option, result and statistics types of kvcompact. Enum names, limits and defaults are
// defined once in schema/options.json (lib/generated/schema.ts); the comments here repeat them.
import type { DeviceName, PrecisionName, StorageName } from './generated/schema';

/** Storage format of keys or values (ARCHITECTURE §3): 'f32' | 'f16' | 'bf16' | 'int8' | 'int4'. */
export type Storage = StorageName;
/** 'cpu' | 'cuda'. */
export type Device = DeviceName;
/** 'exact' | 'fast': decode arithmetic (docs/fast-precision.md). */
export type Precision = PrecisionName;

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
  /**
   * Budget of the block pool in bytes; the pool reserves this much address space up front and
   * commits it as blocks are used. Default: min(physical memory, 8 GiB).
   */
  maxBytes?: number;
  /** 'cpu' (default) or 'cuda'. */
  device?: Device;
  /**
   * Default arithmetic of attention calls. 'fast' scores int8/int4 keys with integer dot
   * products against the query quantized to int8 per group, on the CPU; other formats, and
   * the CUDA backend, compute exactly. Default 'exact'. See docs/fast-precision.md.
   */
  precision?: Precision;
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
  readonly precision: Precision;
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
  /** This call's arithmetic; default: the cache's `precision`. */
  precision?: Precision;
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
  /** The budget, rounded down to whole blocks (without `maxBytes`: min(physical memory, 8 GiB)). */
  maxBytes: number;
  /**
   * Scratch memory the cache's backend holds for compaction and eviction (its workspace:
   * kept between calls so that buffers are warm, one per cache, freed by `dispose()`).
   * Not part of `maxBytes`.
   */
  workspaceBytes: number;
}

export interface Devices {
  /** fastKernels: 'avx512-vnni' (integer keys and int8 values) or 'portable' (integer keys) for precision 'fast' */
  cpu: { available: true; threads: number; simd: string; fastKernels: string };
  cuda: { available: boolean; compiled: boolean; reason?: string; name?: string; devices?: number; totalMemory?: number };
}

/**
 * How many rows `Sequence.evict` keeps. Exactly one of `keep`, `ratio` or `layers`.
 * Protected rows (the policy's sinks and recent window) count toward the budget: when a
 * stream's budget is smaller than its protected rows, sinks are kept first, then the newest.
 * A budget larger than a stream keeps all of it.
 */
export interface EvictionBudget {
  /** Rows kept per stream (per sequence, layer and kv head). */
  keep?: number;
  /** Fraction of each stream's rows kept, in [0, 1]; rounded to the nearest row. */
  ratio?: number;
  /** A ratio per layer (length = layers), e.g. a hand-made schedule. */
  layers?: readonly number[];
  /**
   * 'uniform' (default): every kv head of a layer keeps its own share.
   * 'adaptive' (Ada-KV): the heads of a layer share the layer's total; each head first keeps
   * its protected rows and at least ceil(safeguard × its uniform share) of its best rows, the
   * rest of the total goes to the best rows of any head by normalized score (score divided by
   * the sum of |score| over the head's rows). Heads then end with different lengths.
   */
  perHead?: 'uniform' | 'adaptive';
  /** Adaptive budgets: the guaranteed fraction of each head's uniform share, in [0, 1]. Default 0.2. */
  safeguard?: number;
  /**
   * 'uniform' (default) or 'pyramid' (PyramidKV): the same total, redistributed over layers with
   * weights falling linearly from 1 + slope (layer 0) to 1 − slope (last layer), capped by each
   * layer's rows; within a layer, heads share in proportion to their lengths.
   */
  schedule?: 'uniform' | 'pyramid';
  /** Pyramid slope in [0, 1]. Default 0.5 (the bottom layer keeps 3× the top layer). */
  slope?: number;
}

/** What `Sequence.evict` did. */
export interface EvictionReport {
  /** Rows over all streams before and after. */
  rowsBefore: number;
  rowsAfter: number;
  /** Rows each stream kept: [layers × kvHeads], index layer × kvHeads + kvHead. */
  keptPerStream: Int32Array;
  /**
   * Pool blocks (and bytes) that became free. Negative when evicting a fork whose blocks were
   * shared: copy-on-write then allocates blocks for the kept rows while the parent keeps the old ones.
   */
  blocksFreed: number;
  bytesFreed: number;
  /** Wall time of the whole call (scores, selection and gather). */
  milliseconds: number;
}

/** Queries logged by attention with `recordQueries` for one stream, in the original (unrotated) space. */
export interface RecordedQueries {
  /**
   * [n, headDim], n = min(seen, queryReservoir): a uniform random sample (reservoir sampling,
   * Algorithm R, deterministic for a given history) of every query vector recorded, the query
   * heads of the GQA group counted as separate vectors.
   */
  reservoir: Float32Array;
  /** [m, headDim], m = min(vectors recorded, recentQueries): the newest vectors, oldest first (token-major, group heads in order). */
  recent: Float32Array;
  /** Query vectors recorded so far (tokens × queryHeads / kvHeads). */
  seen: number;
}

/** One stream as a custom eviction policy sees it. */
export interface StreamScoreView {
  layer: number;
  kvHead: number;
  /** Rows in the stream. */
  length: number;
  /** [length] original token positions. */
  positions: Int32Array;
  /** [length] accumulated attention mass (zeros when attention never accumulated scores). */
  scores: Float32Array;
  /** [length, headDim] dequantized keys, when the policy asked for them. */
  keys?: Float32Array;
  /** [length, headDim] dequantized values, when the policy asked for them. */
  values?: Float32Array;
}
