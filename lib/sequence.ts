// Sequence: one sequence of a KVCache (every layer and kv head, ARCHITECTURE §2).
import { KVCacheError, invalidArgument, shapeMismatch } from './errors';
import { lseArray, outputArray, attentionFlags, sparseOption } from './attention-options';
import type { KVCache } from './kv-cache';
import type { NativeSequence } from './native/binding';
import type { AppendOptions, AttentionOptions, LowRankBases, SparseOptions, SparseSelection, StreamRows } from './types';
import { type EvictionPolicy, evictSequence } from './eviction-policy';
import { native } from './native/binding';
import type { EvictionBudget, EvictionReport, RecordedQueries } from './types';
import { asyncDisposeSymbol, disposeSymbol, guardAgainstClone } from './lifecycle';
import { float32Array, indexBelow, integerIn, isInt32Array, knownKeys, optionsObject, rowArray, tokenCount } from './validate';

/**
 * Lifecycle. `free()` returns the blocks at once; `using seq = cache.createSequence()` frees at
 * the end of the scope. A sequence dropped without free() is freed when the garbage collector
 * reclaims it (its blocks stay in use until then; the pool memory is reported to V8, which
 * makes it collect sooner). While a compaction runs the sequence cannot be collected or
 * freed (BUSY); `[Symbol.dispose]()` then aborts the compaction and frees the sequence when it
 * settles, and `[Symbol.asyncDispose]()` waits for that.
 */
export class Sequence {
  /** The cache this sequence lives in. */
  readonly cache: KVCache;
  /** @internal */
  readonly native: NativeSequence;
  /** Brand: only real sequences have it (Object.create(Sequence.prototype) does not). */
  readonly #brand = true;
  /** @internal Background maintenance (lib/maintain.ts): called after each append to the last layer. */
  afterAppend: (() => void) | undefined;
  /** The compaction in flight, if any (set by Compactor.compact). */
  #compaction: { abort: () => void; settled: Promise<void> } | undefined;

  /** @internal Sequences are made by KVCache.createSequence(), importSequence() and fork(). */
  constructor(cache: KVCache, nativeSequence: NativeSequence) {
    this.cache = cache;
    this.native = nativeSequence;
    guardAgainstClone(this, 'Sequence');
  }

  /** True for sequences made by a KVCache (not for look-alikes or copies). */
  static isSequence(value: unknown): value is Sequence {
    return typeof value === 'object' && value !== null && #brand in value;
  }

  /** @internal Compactor.compact: marks the compaction in flight until it settles. */
  trackCompaction(abort: () => void, promise: Promise<unknown>): void {
    const settled = promise.then(
      () => undefined,
      () => undefined,
    );
    const entry = { abort, settled };
    this.#compaction = entry;
    void settled.then(() => {
      if (this.#compaction === entry) this.#compaction = undefined;
    });
    this.cache.trackPending(promise);
  }

  /** `using seq = cache.createSequence()`: free() at the end of the scope (see the class comment when busy). */
  [disposeSymbol](): void {
    const pending = this.#compaction;
    if (pending) {
      pending.abort();
      void pending.settled.then(() => this.free());
      return;
    }
    this.free();
  }

  /** `await using seq = ...`: aborts a running compaction, waits for it to settle, then frees. */
  async [asyncDisposeSymbol](): Promise<void> {
    const pending = this.#compaction;
    if (pending) {
      pending.abort();
      await pending.settled;
    }
    this.free();
  }

  /** True after free() (or after the cache was disposed). */
  get freed(): boolean {
    return this.cache.disposed || this.native.isFreed();
  }

  /** @internal */
  checkAlive(): void {
    this.cache.checkAlive();
    if (this.native.isFreed()) throw new KVCacheError('DISPOSED', 'the sequence has been freed');
  }

  /**
   * Appends T tokens to every kv head of `layer`.
   * keys, values: token-major [T, kvHeads, headDim], both Float32Array or both Uint16Array (f16 bits).
   */
  append(layer: number, keys: Float32Array | Uint16Array, values: Float32Array | Uint16Array, options?: AppendOptions): void {
    this.checkAlive();
    const c = this.cache.config;
    indexBelow('layer', layer, c.layers);
    rowArray('keys', keys);
    rowArray('values', values);
    if (keys.constructor !== values.constructor) {
      throw invalidArgument('values', `the same array type as keys (${keys.constructor.name})`, values);
    }
    const tokens = tokenCount('keys', keys.length, c.kvHeads * c.headDim, 'kvHeads × headDim');
    if (values.length !== keys.length) throw shapeMismatch(`values must hold as many elements as keys (${keys.length}), got ${values.length}`);
    let positions: Int32Array | null = null;
    if (options !== undefined) {
      const o = optionsObject('options', options);
      knownKeys('options', o, ['positions']);
      if (o['positions'] !== undefined) positions = positionArray(o['positions'], tokens);
    }
    this.native.append(layer, keys, values, positions);
    if (layer === c.layers - 1) this.afterAppend?.();
  }

  /**
   * Attention of Tq query tokens over the rows of `layer`.
   * queries: [Tq, queryHeads, headDim] -> output of the same shape. Query i sits at the position of the
   * i-th of the last Tq rows of each stream; a row is visible to it when its position is not later.
   */
  attention(layer: number, queries: Float32Array, options?: AttentionOptions): Float32Array {
    this.checkAlive();
    const c = this.cache.config;
    indexBelow('layer', layer, c.layers);
    float32Array('queries', queries);
    const tq = tokenCount('queries', queries.length, c.queryHeads * c.headDim, 'queryHeads × headDim');
    let out: Float32Array;
    let lse: Float32Array | null = null;
    let flags = 0;
    let sparse: Required<SparseOptions> | null = null;
    if (options === undefined) {
      out = new Float32Array(queries.length);
    } else {
      const o = optionsObject('options', options);
      flags = attentionFlags(o, c.rope);
      out = outputArray(o['out'], queries.length);
      lse = lseArray(o['lse'], tq * c.queryHeads);
      sparse = sparseOption(o['sparse'], c.keySummaries);
    }
    this.native.attention(layer, queries, tq, out, lse, flags, sparse);
    return out;
  }

  /**
   * The blocks `attention(layer, queries, { sparse })` would read, and the logit bound of every
   * block, per kv head (inspection: recall measurements and tests).
   */
  sparseSelection(layer: number, queries: Float32Array, sparse: SparseOptions): SparseSelection[] {
    this.checkAlive();
    const c = this.cache.config;
    indexBelow('layer', layer, c.layers);
    float32Array('queries', queries);
    const tq = tokenCount('queries', queries.length, c.queryHeads * c.headDim, 'queryHeads × headDim');
    const spec = sparseOption(sparse, c.keySummaries);
    if (spec === null) throw invalidArgument('sparse', 'an object', sparse);
    return this.native.sparseSelection(layer, queries, tq, spec);
  }

  /** Rows held by one stream. */
  length(layer: number, kvHead: number): number {
    this.checkAlive();
    indexBelow('layer', layer, this.cache.config.layers);
    indexBelow('kvHead', kvHead, this.cache.config.kvHeads);
    return this.native.length(layer, kvHead);
  }

  /** Rows per kv head of one layer. */
  lengths(layer: number): Int32Array {
    this.checkAlive();
    indexBelow('layer', layer, this.cache.config.layers);
    return this.native.lengths(layer);
  }

  /** The position the next appended token of `layer` gets by default. */
  nextPosition(layer: number): number {
    this.checkAlive();
    indexBelow('layer', layer, this.cache.config.layers);
    return this.native.nextPosition(layer);
  }

  /** A new sequence sharing this one's blocks; either may then change without affecting the other. */
  fork(): Sequence {
    this.checkAlive();
    return new Sequence(this.cache, this.native.fork());
  }

  /** Rolls back to `position`: every stream drops its trailing rows at positions ≥ position. */
  truncate(position: number): void {
    this.checkAlive();
    integerIn('position', position, 0, 0x7fffffff);
    this.native.truncate(position);
  }

  /** Returns the blocks to the pool. Idempotent. */
  free(): void {
    if (this.cache.disposed) return;
    this.native.free();
  }

  /** Dequantized rows of one stream (copies), for inspection and tests. */
  read(layer: number, kvHead: number): StreamRows {
    this.checkAlive();
    indexBelow('layer', layer, this.cache.config.layers);
    indexBelow('kvHead', kvHead, this.cache.config.kvHeads);
    return this.native.read(layer, kvHead);
  }

  /**
   * Low-rank caches: refits the bases of every stream from the rows it holds (lifted back to
   * headDim) and re-projects them; streams still calibrating get their bases now.
   */
  fitBases(): void {
    this.checkAlive();
    this.native.fitBases();
  }

  /**
   * Low-rank caches: gives one stream caller-made bases (e.g. computed offline from
   * calibration text), each [headDim][rank] with orthonormal columns. Rows the stream holds are
   * re-projected (lifted with the old bases first).
   */
  setBases(layer: number, kvHead: number, bases: LowRankBases): void {
    this.checkAlive();
    indexBelow('layer', layer, this.cache.config.layers);
    indexBelow('kvHead', kvHead, this.cache.config.kvHeads);
    const b = optionsObject('bases', bases);
    this.native.setBases(layer, kvHead, float32Array('bases.keys', b['keys']), float32Array('bases.values', b['values']));
  }

  /** Low-rank caches: the bases of one stream (copies), or null while it is still calibrating. */
  bases(layer: number, kvHead: number): LowRankBases | null {
    this.checkAlive();
    indexBelow('layer', layer, this.cache.config.layers);
    indexBelow('kvHead', kvHead, this.cache.config.kvHeads);
    return this.native.bases(layer, kvHead);
  }

  /** Versioned, checksummed bytes of this sequence, for KVCache.importSequence(). */
  export(): Uint8Array {
    this.checkAlive();
    return this.native.export();
  }

  /**
   * Drops rows by `policy` until every stream fits `budget` (see EvictionBudget): evicted
   * blocks go back to the pool. Attention afterwards is attention over the kept rows (their
   * positions, beta and accumulated scores move with them). Evicting a fork never changes its
   * parent. The budget may be omitted for slidingWindow and streamingLLM.
   */
  evict(policy: EvictionPolicy, budget?: EvictionBudget): EvictionReport {
    return evictSequence(this, policy, budget);
  }

  /** Zeroes the attention mass accumulated by `accumulateScores` in every stream. */
  resetScores(): void {
    this.checkAlive();
    this.native.resetScores();
  }

  /**
   * Attention mass accumulated per row of one stream (copy, [length]): each `accumulateScores`
   * call adds every row's attention probability summed over the GQA group's query heads and the
   * Tq queries. Zeros when attention never accumulated scores on this stream. Scores are copied
   * by fork(), move with their rows on eviction and are not exported.
   */
  scores(layer: number, kvHead: number): Float32Array {
    this.checkAlive();
    indexBelow('layer', layer, this.cache.config.layers);
    indexBelow('kvHead', kvHead, this.cache.config.kvHeads);
    return native().streamScores(this.native, layer, kvHead) ?? new Float32Array(this.native.length(layer, kvHead));
  }

  /**
   * Queries recorded by `attention(..., { recordQueries: true })` for one stream (copies): a
   * uniform reservoir sample of up to `queryReservoir` vectors and the newest `recentQueries`
   * vectors, oldest first. Each query token contributes queryHeads / kvHeads vectors.
   */
  recordedQueries(layer: number, kvHead: number): RecordedQueries {
    this.checkAlive();
    indexBelow('layer', layer, this.cache.config.layers);
    indexBelow('kvHead', kvHead, this.cache.config.kvHeads);
    const q = native().recordedQueries(this.native, layer, kvHead);
    const out: RecordedQueries = { reservoir: q.reservoir, recent: q.recent, seen: Math.max(q.seen, q.recentSeen) };
    if (q.reservoirPositions) out.reservoirPositions = q.reservoirPositions;
    return out;
  }
}

function positionArray(value: unknown, tokens: number): Int32Array {
  let positions: Int32Array;
  if (isInt32Array(value)) {
    positions = value;
  } else if (Array.isArray(value)) {
    // An index loop, not every(): every() skips the holes of a sparse array ([1, , 3]),
    // which Int32Array.from would then read as 0.
    for (let i = 0; i < value.length; i++) {
      const p: unknown = value[i];
      if (!(i in value) || typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p > 0x7fffffff) {
        throw invalidArgument('options.positions', 'an Int32Array or an array of non-negative integers', value);
      }
    }
    positions = Int32Array.from(value as number[]);
  } else {
    throw invalidArgument('options.positions', 'an Int32Array or an array of non-negative integers', value);
  }
  if (positions.length !== tokens) throw shapeMismatch(`options.positions must hold one position per token (${tokens}), got ${positions.length}`);
  for (let i = 0; i < positions.length; i++) {
    if (positions[i]! < 0) throw invalidArgument(`options.positions[${i}]`, 'a non-negative integer', positions[i]);
  }
  return positions;
}
