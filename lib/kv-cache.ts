// KVCache: the public entry point. Resolves and checks options, owns the native cache,
// creates sequences and runs batched decode attention.
import * as os from 'node:os';

import { KVCacheError, invalidArgument, shapeMismatch } from './errors';
import { native, type NativeCache } from './native/binding';
import { Sequence } from './sequence';
import { Maintainer, type MaintainOptions } from './maintain';
import { makeProfile, type Profile, type ProfileName, type ProfileShape } from './profiles';
import type { AttentionOptions, CacheStats, Devices, KVCacheConfig, KVCacheOptions } from './types';
import { lseArray, outputArray, attentionFlags, sparseOption } from './attention-options';
import { CACHE_OPTIONS, ROPE_OPTIONS } from './generated/schema';
import { resolveTiers } from './tiers';
import { defaultGroupSize, nativeLowRank, resolveLowRank } from './low-rank';
import { asyncDisposeSymbol, disposeSymbol, guardAgainstClone } from './lifecycle';
import { enumOption, float32Array, indexBelow, integerIn, integerOption, isUint8Array, knownKeys, numberOption, optionsObject } from './validate';

const OPTION_NAMES = [
  'layers', 'kvHeads', 'headDim', 'queryHeads', 'blockSize', 'keys', 'values', 'groupSize',
  'rotate', 'rotationSeed', 'maxBytes', 'device', 'precision', 'threads', 'queryReservoir', 'recentQueries', 'keySummaries', 'lowRank', 'rope', 'tiers',
] as const;

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/**
 * Checks options and fills in defaults (no native code involved). Limits, defaults and enum
 * names come from schema/options.json (lib/generated/schema.ts), the tables the native layer
 * checks with too; the rules between options (queryHeads a multiple of kvHeads, groupSize an
 * even divisor of headDim, rotation only for a power-of-two headDim) are stated here and in
 * cpp/core/config.cpp.
 */
export function resolveOptions(input: KVCacheOptions): KVCacheConfig {
  const L = CACHE_OPTIONS;
  const o = optionsObject('options', input);
  knownKeys('options', o, OPTION_NAMES);
  const layers = integerOption('options.layers', o['layers'], L.layers);
  const kvHeads = integerOption('options.kvHeads', o['kvHeads'], L.kvHeads);
  const headDim = integerOption('options.headDim', o['headDim'], L.headDim);
  if (headDim % L.headDim.multipleOf !== 0) throw invalidArgument('options.headDim', 'an even integer', headDim);
  const queryHeads = o['queryHeads'] === undefined ? kvHeads : integerOption('options.queryHeads', o['queryHeads'], L.queryHeads);
  if (queryHeads % kvHeads !== 0) throw invalidArgument('options.queryHeads', `a multiple of kvHeads (${kvHeads})`, queryHeads);
  const blockSize = o['blockSize'] === undefined ? L.blockSize.default : integerOption('options.blockSize', o['blockSize'], L.blockSize);
  const tiers = resolveTiers(o['tiers']);
  const keys = o['keys'] === undefined ? (tiers?.[0]!.keys ?? L.keys.default) : enumOption('options.keys', o['keys'], L.keys.names);
  const values = o['values'] === undefined ? (tiers?.[0]!.values ?? L.values.default) : enumOption('options.values', o['values'], L.values.names);
  if (tiers && (keys !== tiers[0]!.keys || values !== tiers[0]!.values)) {
    throw invalidArgument('options.keys/values', `the first tier's formats (${tiers[0]!.keys}/${tiers[0]!.values}) or omitted`, `${keys}/${values}`);
  }
  const groupSize = o['groupSize'] === undefined ? defaultGroupSize(o['lowRank'], headDim) : integerIn('options.groupSize', o['groupSize'], L.groupSize.min, headDim);
  if (headDim % groupSize !== 0 || groupSize % L.groupSize.multipleOf !== 0) {
    throw invalidArgument('options.groupSize', `an even divisor of headDim (${headDim})`, groupSize);
  }
  let rotateKeys = false;
  let rotateValues = false;
  const rotate = o['rotate'];
  if (typeof rotate === 'boolean') {
    rotateKeys = rotate;
  } else if (rotate !== undefined) {
    const r = optionsObject('options.rotate', rotate);
    knownKeys('options.rotate', r, ['keys', 'values']);
    if (r['keys'] !== undefined && typeof r['keys'] !== 'boolean') throw invalidArgument('options.rotate.keys', 'a boolean', r['keys']);
    if (r['values'] !== undefined && typeof r['values'] !== 'boolean') throw invalidArgument('options.rotate.values', 'a boolean', r['values']);
    rotateKeys = r['keys'] === true;
    rotateValues = r['values'] === true;
  }
  if ((rotateKeys || rotateValues) && !isPowerOfTwo(headDim)) {
    throw invalidArgument('options.rotate', `false for a headDim that is not a power of two (${headDim})`, rotate);
  }
  const rotationSeed = o['rotationSeed'] === undefined ? L.rotationSeed.default : integerOption('options.rotationSeed', o['rotationSeed'], L.rotationSeed);
  let maxBytes: number = L.maxBytes.default;
  if (o['maxBytes'] !== undefined && o['maxBytes'] !== Infinity) maxBytes = integerOption('options.maxBytes', o['maxBytes'], L.maxBytes);
  const device = o['device'] === undefined ? L.device.default : enumOption('options.device', o['device'], L.device.names);
  const precision = o['precision'] === undefined ? L.precision.default : enumOption('options.precision', o['precision'], L.precision.names);
  const threads = o['threads'] === undefined ? Math.min(os.availableParallelism(), L.threads.max) : integerOption('options.threads', o['threads'], L.threads);
  const queryReservoir = o['queryReservoir'] === undefined ? L.queryReservoir.default : integerOption('options.queryReservoir', o['queryReservoir'], L.queryReservoir);
  const recentQueries = o['recentQueries'] === undefined ? L.recentQueries.default : integerOption('options.recentQueries', o['recentQueries'], L.recentQueries);
  const keySummaries = o['keySummaries'] ?? false;
  if (typeof keySummaries !== 'boolean') throw invalidArgument('options.keySummaries', 'a boolean', keySummaries);
  const lowRank = resolveLowRank(o['lowRank'], headDim, groupSize, rotateKeys || rotateValues);
  if (lowRank && keySummaries) throw invalidArgument('options.keySummaries', 'false with lowRank (summaries of coefficient rows are not implemented)', true);
  const rope = resolveRope(o['rope'], headDim, rotateKeys);
  if (tiers && (lowRank || rope || keySummaries)) {
    throw new KVCacheError('UNSUPPORTED', `options.tiers: not available together with ${lowRank ? 'lowRank' : rope ? 'rope' : 'keySummaries'} yet`);
  }
  return {
    layers, kvHeads, headDim, queryHeads, blockSize, keys, values, groupSize, rotateKeys, rotateValues,
    rotationSeed, maxBytes, device, precision, threads, queryReservoir, recentQueries, keySummaries, lowRank, rope, tiers,
  };
}

/** The rope option (ROPE_OPTIONS of the schema), defaults filled in; null when not given. */
function resolveRope(value: unknown, headDim: number, rotateKeys: boolean): KVCacheConfig['rope'] {
  if (value === undefined || value === null) return null;
  const R = ROPE_OPTIONS;
  const r = optionsObject('options.rope', value);
  knownKeys('options.rope', r, ['theta', 'dims', 'style']);
  if (r['theta'] === undefined) throw invalidArgument('options.rope.theta', 'a number > 0 (e.g. 10000)', undefined);
  const theta = numberOption('options.rope.theta', r['theta'], R.theta);
  const dims = r['dims'] === undefined ? headDim : integerIn('options.rope.dims', r['dims'], R.dims.min, headDim);
  if (dims % R.dims.multipleOf !== 0) throw invalidArgument('options.rope.dims', `an even integer in [2, headDim = ${headDim}]`, dims);
  const style = r['style'] === undefined ? R.style.default : enumOption('options.rope.style', r['style'], R.style.names);
  // Hadamard-rotated keys would have to be rotated back row by row before RoPE.
  if (rotateKeys) throw invalidArgument('options.rotate', 'false for keys when rope is given', true);
  return Object.freeze({ theta, dims, style });
}

/**
 * A KV cache: one block pool on one device, holding the sequences made from it. Appends,
 * attention, eviction and compaction go through its `Sequence`s; `dispose()` frees the pool.
 */
export class KVCache {
  /** The options this cache runs with, defaults filled in. */
  readonly config: KVCacheConfig;
  /** @internal */
  readonly native: NativeCache;
  #disposed = false;
  /** Compactions in flight on this cache's sequences (settled or not, never rejected here). */
  readonly #pending = new Set<Promise<unknown>>();

  /**
   * Checks the options (a KVCacheError names the first bad one) and reserves the pool.
   * Throws CUDA_UNAVAILABLE for device 'cuda' without a usable GPU (see `KVCache.devices()`).
   */
  constructor(options: KVCacheOptions) {
    this.config = Object.freeze(resolveOptions(options));
    guardAgainstClone(this, 'KVCache');
    const addon = native();
    if (this.config.device === 'cuda') {
      const cuda = addon.devices().cuda;
      if (!cuda.available) throw new KVCacheError('CUDA_UNAVAILABLE', `cuda unavailable: ${cuda.reason ?? 'unknown reason'}`);
    }
    const { lowRank, tiers, ...flat } = this.config;
    this.native = new addon.NativeCache({
      ...flat, ...nativeLowRank(lowRank), maxBytes: this.config.maxBytes,
      ...(tiers ? { tiers: tiers.map((t) => ({ rows: t.rows ?? 0, keys: t.keys, values: t.values })) } : {}),
    });
  }

  /**
   * A named preset ('quality', 'balanced', 'tiny') for a model shape: cache options, the
   * maintain() options of its memory target (null for 'quality') and decode attention options
   * (lib/profiles.ts; measured bytes per token and quality in EVALUATION.md).
   */
  static profile(name: ProfileName, shape: ProfileShape): Profile {
    return makeProfile(name, shape, (o) => KVCache.bytesPerToken(o));
  }

  /** Devices this build can use, and why CUDA cannot be used when it cannot. */
  static devices(): Devices {
    return native().devices();
  }

  /**
   * KV bytes per token (all layers and kv heads, block overhead included) for planning `maxBytes`.
   * With lowRank: the coefficient rows, plus the bases spread over `tokens` tokens when given
   * (bases are fixed per stream, so their share per token falls as streams grow).
   * With tiers: the first tier's rate, an upper bound (a lower tier's blocks hold more rows;
   * `stats().tiers` reports how a cache's rows are split).
   */
  static bytesPerToken(options: KVCacheOptions, tokens?: number): number {
    const c = resolveOptions(options);
    const width = c.lowRank ? c.lowRank.keys : c.headDim;
    const valueWidth = c.lowRank && c.lowRank.values !== width ? c.lowRank.values : undefined;
    const layout = native().blockLayout(c.keys, c.values, width, c.groupSize, c.blockSize, c.keySummaries, valueWidth);
    const rows = (c.layers * c.kvHeads * layout.blockBytes) / c.blockSize;
    if (!c.lowRank || tokens === undefined) return rows;
    // Values kept unprojected (value rank = headDim) have no basis.
    const valueBasis = c.lowRank.values === c.headDim ? 0 : c.lowRank.values;
    const basisBytes = c.layers * c.kvHeads * 4 * c.headDim * (c.lowRank.keys + valueBasis);
    return rows + basisBytes / tokens;
  }

  /** True after `dispose()`: every further call throws DISPOSED. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** @internal */
  checkAlive(): void {
    if (this.#disposed) throw new KVCacheError('DISPOSED', 'the cache has been disposed');
  }

  /** A new, empty sequence (every stream of every layer has length 0). */
  createSequence(): Sequence {
    this.checkAlive();
    return new Sequence(this, this.native.createSequence());
  }

  /** Starts a sequence from bytes made by `Sequence.export()` (with the same formats). */
  importSequence(bytes: Uint8Array): Sequence {
    this.checkAlive();
    if (!isUint8Array(bytes)) throw invalidArgument('bytes', 'a Uint8Array', bytes);
    return new Sequence(this, this.native.importSequence(bytes));
  }

  /**
   * One decode step (one query token) for many sequences.
   * queries: [sequences.length, queryHeads, headDim] -> output of the same shape.
   */
  attentionBatch(layer: number, sequences: readonly Sequence[], queries: Float32Array, options?: AttentionOptions): Float32Array {
    this.checkAlive();
    const c = this.config;
    indexBelow('layer', layer, c.layers);
    if (!Array.isArray(sequences) || sequences.length === 0) throw invalidArgument('sequences', 'a non-empty array of Sequence', sequences);
    const seen = new Set<Sequence>();
    const natives = sequences.map((s, i) => {
      if (!Sequence.isSequence(s)) throw invalidArgument(`sequences[${i}]`, 'a Sequence', s);
      if (s.cache !== this) throw invalidArgument(`sequences[${i}]`, 'a Sequence of this cache', 'a sequence of another cache');
      // Twice in one batch would read its rows twice and count its attention mass twice.
      if (seen.has(s)) throw invalidArgument(`sequences[${i}]`, 'a Sequence not already in the batch', 'a duplicate');
      seen.add(s);
      s.checkAlive();
      return s.native;
    });
    float32Array('queries', queries);
    const expected = sequences.length * c.queryHeads * c.headDim;
    if (queries.length !== expected) {
      throw shapeMismatch(`queries must hold sequences × queryHeads × headDim = ${expected} elements, got ${queries.length}`);
    }
    const o = optionsObject('options', options);
    const flags = attentionFlags(o, this.config.rope);
    const out = outputArray(o['out'], expected);
    const lse = lseArray(o['lse'], sequences.length * c.queryHeads);
    const sparse = sparseOption(o['sparse'], c.keySummaries);
    this.native.attentionBatch(layer, natives, queries, out, lse, flags, sparse);
    return out;
  }

  /**
   * Keeps `seq` under a memory target in the background (lib/maintain.ts): whenever an append
   * to the last layer leaves it over the target, a pass shrinks a snapshot of its older rows
   * with `options.policy` and swaps the result in, keeping the rows appended meanwhile.
   * Returns the Maintainer (an EventEmitter of 'pass', 'skip' and 'error'); stop() ends it.
   */
  maintain(seq: Sequence, options: MaintainOptions): Maintainer {
    this.checkAlive();
    if (Sequence.isSequence(seq) && seq.cache !== this) throw invalidArgument('seq', 'a Sequence of this cache', 'a sequence of another cache');
    return new Maintainer(seq, options);
  }

  /** Sequences, rows and pool memory of this cache now. */
  stats(): CacheStats {
    this.checkAlive();
    const s = this.native.stats();
    const tokens = s.rows / (this.config.layers * this.config.kvHeads);
    const bytesUsed = s.blocksUsed * s.blockBytes + s.lowRankBytes;
    return {
      sequences: s.sequences,
      rows: s.rows,
      tokens,
      blocksUsed: s.blocksUsed,
      blocksFree: s.blocksFree,
      blockBytes: s.blockBytes,
      bytesUsed,
      bytesPerToken: tokens > 0 ? bytesUsed / tokens : 0,
      committedBytes: s.committedBytes,
      maxBytes: s.maxBytes,
      workspaceBytes: s.workspaceBytes,
      lowRankBytes: s.lowRankBytes,
      ...(s.tiers && this.config.tiers ? {
        tiers: s.tiers.map((t, k) => ({
          keys: this.config.tiers![k]!.keys, values: this.config.tiers![k]!.values, rowsPerBlock: t.rowsPerBlock,
          blocks: t.blocks, rows: t.rows, bytes: t.blocks * s.blockBytes,
        })),
      } : {}),
    };
  }

  /**
   * Frees the scratch memory the cache keeps between calls (`stats().workspaceBytes`: the
   * compaction and eviction workspace, the host low-rank attention buffers) that no running
   * operation uses. The next call that needs it allocates it again.
   */
  trimWorkspace(): void {
    this.checkAlive();
    this.native.trimWorkspace();
  }

  /**
   * Frees all memory; every later call on the cache or its sequences throws DISPOSED. Never
   * blocks: a compaction still running is cancelled (its promise rejects with DISPOSED) and
   * its cache memory is released when its current batch of streams ends; await
   * `[Symbol.asyncDispose]()` (or `await using`) to wait for that.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.native.dispose();
  }

  /** `using cache = new KVCache(...)`: dispose() at the end of the scope. */
  [disposeSymbol](): void {
    this.dispose();
  }

  /** `await using cache = ...`: dispose(), then wait until cancelled compactions have let go of the memory. */
  async [asyncDisposeSymbol](): Promise<void> {
    this.dispose();
    await Promise.allSettled([...this.#pending]);
  }

  /** @internal Compactor.compact registers its promise until it settles. */
  trackPending(promise: Promise<unknown>): void {
    const settled = promise.then(
      () => undefined,
      () => undefined,
    );
    this.#pending.add(settled);
    void settled.then(() => this.#pending.delete(settled));
  }
}
