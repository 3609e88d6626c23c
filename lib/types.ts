// Public option, result and statistics types of kvcompact. Enum names, limits and defaults are
// defined once in schema/options.json (lib/generated/schema.ts); the comments here repeat them.
import type { DeviceName, PrecisionName, RopeStyleName, StorageName } from './generated/schema';

/** Storage format of keys or values (ARCHITECTURE §3): 'f32' | 'f16' | 'bf16' | 'int8' | 'int4'. */
export type Storage = StorageName;
/** 'cpu' | 'cuda'. */
export type Device = DeviceName;
/** 'exact' | 'fast': decode arithmetic (docs/fast-precision.md). */
export type Precision = PrecisionName;

/** Options of `new KVCache(options)`; only layers, kvHeads and headDim are required. */
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
   * the CUDA backend, and caches with rope or lowRank compute exactly. Default 'exact'. See
   * docs/fast-precision.md.
   */
  precision?: Precision;
  /** CPU threads for attention (the caller's thread included). Default: available parallelism. */
  threads?: number;
  /** Query vectors kept per stream by `recordQueries` (uniform reservoir sample). Default 512. */
  queryReservoir?: number;
  /** Newest query vectors kept per stream by `recordQueries`. Default 64. */
  recentQueries?: number;
  /**
   * Keep a key summary per block (per-channel min/max of the stored keys and the largest beta,
   * 16 + 4 × headDim bytes per block, in a dense side array), which `attention(..., { sparse })`
   * needs. With `rope`, a key is summarized after RoPE at its stored position. Default false.
   */
  keySummaries?: boolean;
  /**
   * Low-rank storage: each (layer, kv head) stream stores rows as coefficients on its own
   * orthonormal key and value bases (ranks `keys` and `values`, even, at most headDim;
   * groupSize must divide both; `values` defaults to `keys`). `values: headDim` keeps values
   * unprojected in the cache's `values` format (e.g. low-rank keys + int8 values). Unequal
   * ranks, and lowRank with `rope` (bases fitted on pre-RoPE keys), attend over lifted rows
   * (device 'cpu' on the host, device 'cuda' lifting each tile in the attention kernel; with `rope` they compact on the lifted, rotated keys; unequal ranks export as format version 5). A stream holds its first `calibrationRows` rows (default 256)
   * as binary16 (f32 when keys or values are stored as f32), then fits its bases on them and
   * projects every row; 0 holds rows until `seq.fitBases()` or `seq.setBases()`.
   */
  lowRank?: { keys: number; values?: number; calibrationRows?: number };
  /**
   * The model's RoPE: keys are appended *before* RoPE and queries are passed before RoPE too;
   * the cache rotates both by position inside attention. Needed for re-indexed positions
   * (`attention(..., { positions: 'rank' })`). With `lowRank`, the bases are fitted on pre-RoPE keys.
   * Compaction fits the rotated logits (queries and keys at their stored positions) and keeps
   * the pre-RoPE rows (docs/rope-compaction.md). Default: none (keys and queries arrive after RoPE).
   */
  rope?: RopeOptions;
  /**
   * Precision tiers, newest rows first: `[{ rows: 128, keys: 'f16', values: 'f16' }, { keys:
   * 'int8', values: 'int4' }]` keeps each stream's newest 128 rows (at least) in f16 and
   * requantizes older whole blocks once, at append time, into int8 keys and int4 values.
   * 2 to 4 tiers; every tier but the last has `rows`; no tier uses more bytes per row than
   * the one above. `keys` / `values`, when given, must equal the first tier's. Eviction,
   * compaction, sparse decode, lowRank and rope are not available with tiers yet
   * (docs/tiers.md).
   */
  tiers?: TierOptions[];
}

/** One precision tier (KVCacheOptions.tiers). */
export interface TierOptions {
  /** Rows the tier keeps before its oldest whole blocks age into the next tier; omitted on the last tier. */
  rows?: number;
  keys: Storage;
  values: Storage;
}

/** A resolved tier: rows is null on the last tier. */
export interface TierConfig {
  readonly rows: number | null;
  readonly keys: Storage;
  readonly values: Storage;
}

/** A resolved lowRank option. */
export interface LowRankConfig {
  /** Rank of each stream's key basis (coefficients per stored key row). */
  readonly keys: number;
  /** Rank of each stream's value basis (headDim: values are kept unprojected). */
  readonly values: number;
  /** Rows a stream holds (binary16, or f32 in a cache storing f32 rows) before its bases are fitted (0: only by setBases/fitBases). */
  readonly calibrationRows: number;
}

/** The bases of one low-rank stream: [headDim][rank] each, orthonormal columns. */
export interface LowRankBases {
  /** Key basis, [headDim][rank] row-major. */
  keys: Float32Array;
  /** Value basis, [headDim][rank] row-major. */
  values: Float32Array;
}

/** RoPE parameters of the model: the cache applies RoPE to keys and queries by position. */
export interface RopeOptions {
  /** Base of the frequencies theta^(-2i/dims), e.g. 10000 (Llama 2) or 500000 (Llama 3). */
  theta: number;
  /** Rotated channels: the first `dims` of each head (even, at most headDim). Default headDim. */
  dims?: number;
  /** 'interleaved' pairs (2i, 2i+1) as llama2.c / Meta Llama (default), or 'half': (i, i + dims/2) as Hugging Face / GPT-NeoX. */
  style?: RopeStyleName;
}

/** The options a cache runs with, all defaults filled in. */
export interface KVCacheConfig {
  /** Transformer layers. */
  readonly layers: number;
  /** Key/value heads per layer. */
  readonly kvHeads: number;
  /** Elements per head. */
  readonly headDim: number;
  /** Query heads per layer (a multiple of kvHeads). */
  readonly queryHeads: number;
  /** Rows (tokens) per block. */
  readonly blockSize: number;
  /** Storage of keys. */
  readonly keys: Storage;
  /** Storage of values. */
  readonly values: Storage;
  /** Quantization group along headDim. */
  readonly groupSize: number;
  /** Keys are Hadamard-rotated before storage. */
  readonly rotateKeys: boolean;
  /** Values are Hadamard-rotated before storage (and attention outputs rotated back). */
  readonly rotateValues: boolean;
  /** Seed of the rotation's sign flips. */
  readonly rotationSeed: number;
  /** Budget of the block pool in bytes. */
  readonly maxBytes: number;
  /** Where the rows live and the kernels run. */
  readonly device: Device;
  /** Default arithmetic of attention calls (caches with rope or lowRank compute exactly either way: docs/fast-precision.md). */
  readonly precision: Precision;
  /** CPU threads for attention. */
  readonly threads: number;
  /** Query vectors kept per stream by `recordQueries` (reservoir sample). */
  readonly queryReservoir: number;
  /** Newest query vectors kept per stream by `recordQueries`. */
  readonly recentQueries: number;
  /** Blocks keep per-channel key summaries (for sparse decode). */
  readonly keySummaries: boolean;
  /** Low-rank storage, or null (rows stored at full width). */
  readonly lowRank: LowRankConfig | null;
  /** RoPE the cache applies (keys stored before RoPE), or null (keys stored after RoPE). */
  readonly rope: Readonly<Required<RopeOptions>> | null;
  /** Precision tiers, newest first, or null (one format for every block). */
  readonly tiers: readonly TierConfig[] | null;
}

/** Options of `Sequence.attention` and `KVCache.attentionBatch`. */
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
  /**
   * Positions RoPE uses (caches with `rope` only): 'stored' (default) rotates every row and
   * query by the position it was appended at; 'rank' re-indexes them by their row index in
   * the stream (0, 1, 2, ... after eviction: StreamingLLM's positions inside the cache).
   */
  positions?: 'stored' | 'rank';
  /**
   * Dynamic sparse decode (Quest-style; caches with `keySummaries`): per kv head, read only the
   * blocks whose logit upper bound (from the key summaries, max over the GQA group's queries)
   * is highest, about `tokens` rows, plus the blocks of the first `sinks` rows (default 4) and
   * of the newest `recent` rows (default 64); attention is exact over the blocks read, and
   * `accumulateScores` adds mass to those rows only. With the cache option `rope`, queries are
   * rotated at their positions before the bounds; `positions: 'rank'` is refused (UNSUPPORTED).
   */
  sparse?: SparseOptions;
}

/** Dynamic sparse decode: attend only to the blocks whose key summaries bound the highest logits. */
export interface SparseOptions {
  /** Rows read per stream (rounded up to whole blocks). */
  tokens: number;
  /** First rows always read. Default 4. */
  sinks?: number;
  /** Newest rows always read (at least the query tokens). Default 64. */
  recent?: number;
}

/** What sparse attention reads for given queries, per kv head (`Sequence.sparseSelection`). */
export interface SparseSelection {
  /** Indices of the blocks read (ascending; block b holds rows [b·blockSize, (b+1)·blockSize)). */
  blocks: Int32Array;
  /** Upper bound of the logits of every block of the stream (scaled, beta included). */
  bounds: Float32Array;
}

/** Options of `Sequence.append`. */
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

/** What `KVCache.stats()` reports: the sequences, rows and pool memory of a cache. */
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
  /** Bytes of one block (blockSize rows of keys, values, beta and positions). */
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
   * Scratch memory kept between calls so that buffers are warm: the backend's workspace for
   * compaction and eviction, and the per-thread buffers of the host low-rank attention path
   * (lowRank with rope, or unequal ranks). One set per cache, released by `trimWorkspace()`
   * and `dispose()`. Not part of `maxBytes`.
   */
  workspaceBytes: number;
  /**
   * Low-rank side data: the bases of every stream (a basis shared by forks counts once) and
   * the full-precision rows of streams still calibrating. Included in bytesUsed.
   */
  lowRankBytes: number;
  /**
   * With tiers: per tier (newest first) its blocks (a block shared by forks counts once),
   * rows (of every sequence) and bytes (blocks × blockBytes). Every block of any tier takes
   * blockBytes of the pool; a lower tier's block holds more rows.
   */
  tiers?: { keys: Storage; values: Storage; rowsPerBlock: number; blocks: number; rows: number; bytes: number }[];
}

/** What `KVCache.devices()` reports: the backends this binary has and this machine can run. */
export interface Devices {
  /** The CPU backend, always present. */
  cpu: {
    available: true;
    /** Hardware threads (the default `threads` of a cache). */
    threads: number;
    /** The SIMD kernels in use: 'avx512', 'avx2' or 'portable' (capped by KVCOMPACT_SIMD). */
    simd: string;
    /** The kernels of precision 'fast': 'avx512-vnni' (integer keys and int8 values) or 'portable' (integer keys). */
    fastKernels: string;
  };
  /** The CUDA backend. */
  cuda: {
    /** `device: 'cuda'` works: the backend is compiled in and a GPU and driver were found (or the test build's emulator is on). */
    available: boolean;
    /** The binary contains the CUDA backend (the prebuilt binary does; a node-gyp build from source does not). */
    compiled: boolean;
    /** True only in the test build, which contains the CUDA emulator. */
    emulationCompiled: boolean;
    /** True when device 'cuda' is the emulator (test build with KVCOMPACT_CUDA_EMULATION=1). */
    emulated: boolean;
    /** Why `available` is false, e.g. 'built without CUDA' or the CUDA runtime's error. */
    reason?: string;
    /** Name of device 0 (when available). */
    name?: string;
    /** Number of CUDA devices (when available). */
    devices?: number;
    /** Memory of device 0 in bytes (when available). */
    totalMemory?: number;
    /** Compute capability of device 0 as major.minor, e.g. 8.6 (when available). */
    computeCapability?: number;
    /** CUDA runtime version linked in, as CUDART_VERSION (e.g. 13000), when known. */
    runtimeVersion?: number;
    /** Driver's CUDA version (e.g. 12040), when a driver is installed. */
    driverVersion?: number;
  };
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
  /** Rows over all streams before. */
  rowsBefore: number;
  /** Rows over all streams after. */
  rowsAfter: number;
  /** Rows each stream kept: [layers × kvHeads], index layer × kvHeads + kvHead. */
  keptPerStream: Int32Array;
  /**
   * Pool blocks (and bytes) that became free. Negative when evicting a fork whose blocks were
   * shared: copy-on-write then allocates blocks for the kept rows while the parent keeps the old ones.
   */
  blocksFreed: number;
  /** blocksFreed × blockBytes. */
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
  /**
   * Caches with `rope` only: [n], the stored position of each reservoir vector's query token
   * (compaction rotates the pre-RoPE query by it).
   */
  reservoirPositions?: Int32Array;
}

/** One stream as a custom eviction policy sees it. */
export interface StreamScoreView {
  /** The stream's layer. */
  layer: number;
  /** The stream's kv head. */
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
