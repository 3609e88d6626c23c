// Compactor: Attention Matching compaction of a sequence (ARCHITECTURE §4.5). Validates and
// translates options; the work runs natively (cpp/core/compaction/sequence_compactor.h over the
// backend's compactStreams), off the event loop for compact(), on the calling thread for
// compactSync()/maybeCompact().
import { KVCacheError, abortedError, invalidArgument } from './errors';
import { COMPACTION_METHOD, COMPACTION_OPTIONS, type CompactionMethodName, type QuerySourceName } from './generated/schema';
import { asyncDisposeSymbol, disposeSymbol } from './lifecycle';
import { native, type NativeCompactionReport, type NativeCompactionSpec } from './native/binding';
import { Sequence } from './sequence';
import { enumOption, isFloat32Array, isInt32Array, isInteger, knownKeys, numberOption, optionsObject } from './validate';

/** 'highest-attention' | 'omp' */
export type CompactionMethod = CompactionMethodName;

/**
 * Where the reference queries of each stream come from:
 * - 'recorded' (default): the stream's reservoir of queries logged by
 *   `attention(..., { recordQueries: true })`; a stream with none falls back to its own keys
 *   (reported as querySource 'keys');
 * - 'keys': the stream's own keys (a uniform subsample of at most 1024) as proxies;
 * - one Float32Array per layer, [n, queryHeads, headDim] (or null: that layer uses its
 *   recorded queries); the query heads of a GQA group are pooled per kv head.
 */
export type ReferenceQueries = 'recorded' | 'keys' | ReadonlyArray<Float32Array | null>;

/** Options of one compaction (constructor defaults, overridable per call). */
export interface CompactOptions {
  /** 'highest-attention' (default; best when keeping much) or 'omp' (best at small ratios). */
  method?: CompactionMethod;
  /** Rows kept per stream: ceil(ratio × rows), ratio in (0, 1]. Give ratio or targetTokens. */
  ratio?: number;
  /** Rows kept per stream (clamped to the stream's rows). */
  targetTokens?: number;
  /** Rows kept unchanged: the first `sinks` rows and the last `recent` rows of every stream. Default { sinks: 4, recent: 32 }. */
  protect?: { sinks?: number; recent?: number };
  /** > 0: compact contiguous chunks of this many rows independently (bounds time and memory on long streams). Default 0. */
  chunkSize?: number;
  /** Relative ridge of the two least-squares fits. Default 1e-4. */
  ridge?: number;
  /** Projected coordinate-descent sweeps of the bias fit. Default 30. */
  nnlsIterations?: number;
  /** Reference queries (see ReferenceQueries). */
  queries?: ReferenceQueries;
  /** Per layer [n, queryHeads, headDim] (or null), used only to report held-out errors. */
  heldOutQueries?: ReadonlyArray<Float32Array | null>;
  /**
   * Caches with `rope` only (queries given before RoPE): per layer one position per token of
   * `queries[layer]` (Int32Array [n], or null). A layer without positions puts every given
   * query at the layer's next position, as the next decoded token would be. Recorded queries
   * carry the positions of their tokens.
   */
  queryPositions?: ReadonlyArray<Int32Array | null>;
  /** The same for heldOutQueries. */
  heldOutPositions?: ReadonlyArray<Int32Array | null>;
  /** Only these layers (default all). */
  layers?: readonly number[];
  /** Only these kv heads of each layer (default all). */
  heads?: readonly number[];
  /** Compaction threads (the worker thread included). Default: the cache's `threads`. */
  threads?: number;
  /** compact() only: called with the fraction of streams done (0..1] after each batch. Exceptions it throws are ignored. */
  onProgress?: (fraction: number) => void;
  /**
   * compact(): cancels the compaction. It stops at the next batch of streams (or before the
   * results are applied); the promise rejects with a KVCacheError of code 'ABORTED' (the
   * signal's reason as `cause`) and the sequence is exactly as before. An already aborted
   * signal rejects at once. compactSync() and maybeCompact() only check it before starting.
   */
  signal?: AbortSignal;
}

/** Options of `new Compactor(options)`: the defaults of every compaction it runs, plus online compaction. */
export interface CompactorOptions extends CompactOptions {
  /**
   * Online compaction for maybeCompact(): every stream longer than `maxRows` rows has its
   * older part (all but the protected rows) compacted by `ratio`, i.e. it keeps
   * sinks + recent + ceil(ratio × (rows − sinks − recent)) rows. ratio must be in (0, 1).
   */
  online?: { maxRows: number };
}

/** What happened to one stream. */
export interface StreamCompactionReport {
  /** The stream's layer. */
  layer: number;
  /** The stream's kv head. */
  kvHead: number;
  /** Rows before compaction. */
  rowsBefore: number;
  /** Rows after compaction. */
  rowsAfter: number;
  /** Reference queries used. */
  queries: number;
  /** Where the reference queries came from: recorded by attention, the keys themselves, or given by the caller. */
  querySource: 'recorded' | 'keys' | 'given';
  /** ‖softmax(S') V' − softmax(S) V‖_F / ‖softmax(S) V‖_F over the reference queries. */
  outputError: number;
  /** Mean |exp(lse' − lse) − 1| over the reference queries (attention mass error). */
  massError: number;
  /** The same over the held-out queries; undefined without heldOutQueries. */
  heldOutOutputError: number | undefined;
  /** massError over the held-out queries; undefined without heldOutQueries. */
  heldOutMassError: number | undefined;
  /** How often a factorization needed a larger ridge. */
  ridgeRaises: number;
  /** Native time per phase of this stream. */
  milliseconds: { scores: number; select: number; nnls: number; values: number; diagnostics: number };
}

/** What a compaction did. */
export interface CompactionReport {
  /** One report per compacted stream. */
  streams: StreamCompactionReport[];
  /** Rows of the compacted streams before. */
  rowsBefore: number;
  /** Rows of the compacted streams after. */
  rowsAfter: number;
  /** Pool memory in use (blocks × blockBytes) before and after, and the difference. Negative bytesFreed: compacting a fork copies shared blocks. */
  bytesBefore: number;
  /** Pool memory in use after (blocks × blockBytes). */
  bytesAfter: number;
  /** Pool blocks that became free (negative when a fork's shared blocks were copied). */
  blocksFreed: number;
  /** bytesBefore − bytesAfter. */
  bytesFreed: number;
  /** Largest outputError over the streams (0 when no stream was compacted). */
  maxOutputError: number;
  /** Mean outputError over the streams (0 when no stream was compacted). */
  meanOutputError: number;
  /**
   * Time per phase: read (dequantize rows, gather queries) and apply (gather kept rows,
   * re-encode values) are wall times; scores/select/nnls/values/diagnostics are summed over
   * streams (with several threads they add up to more than the wall time); total is wall.
   */
  milliseconds: { read: number; scores: number; select: number; nnls: number; values: number; diagnostics: number; apply: number; total: number };
}

const OPTION_KEYS = [
  'method', 'ratio', 'targetTokens', 'protect', 'chunkSize', 'ridge', 'nnlsIterations', 'queries',
  'heldOutQueries', 'queryPositions', 'heldOutPositions', 'layers', 'heads', 'threads', 'onProgress', 'signal',
] as const;
const MAX_U32 = 0xffffffff;
const C = COMPACTION_OPTIONS;

/** Checked options, `protect` flattened; undefined = not given. */
type Resolved = Omit<CompactOptions, 'protect'> & { sinks?: number; recent?: number };

function count(name: string, value: unknown, min: number, max = MAX_U32): number {
  if (!isInteger(value) || value < min || value > max) throw invalidArgument(name, `an integer in [${min}, ${max}]`, value);
  return value;
}

function layerArrays(name: string, value: unknown): ReadonlyArray<Float32Array | null> {
  if (!Array.isArray(value)) throw invalidArgument(name, 'an array with one Float32Array (or null) per layer', value);
  value.forEach((a, l) => {
    if (a !== null && !isFloat32Array(a)) throw invalidArgument(`${name}[${l}]`, 'a Float32Array [n, queryHeads, headDim] or null', a);
  });
  return value as ReadonlyArray<Float32Array | null>;
}

function layerPositions(name: string, value: unknown): ReadonlyArray<Int32Array | null> {
  if (!Array.isArray(value)) throw invalidArgument(name, 'an array with one Int32Array (or null) per layer', value);
  value.forEach((a, l) => {
    if (a !== null && !isInt32Array(a)) throw invalidArgument(`${name}[${l}]`, 'an Int32Array [n] of positions or null', a);
    if (a) {
      for (let i = 0; i < a.length; i++) if (a[i]! < 0) throw invalidArgument(`${name}[${l}][${i}]`, 'a non-negative position', a[i]);
    }
  });
  return value as ReadonlyArray<Int32Array | null>;
}

function indexList(name: string, value: unknown): readonly number[] {
  if (!Array.isArray(value) || value.length === 0) throw invalidArgument(name, 'a non-empty array of indices', value);
  value.forEach((v, i) => count(`${name}[${i}]`, v, 0, 0x7fffffff));
  return value as number[];
}

function resolve(name: string, value: unknown, extraKeys: readonly string[] = []): Resolved {
  const o = optionsObject(name, value);
  knownKeys(name, o, [...OPTION_KEYS, ...extraKeys]);
  const r: Resolved = {};
  if (o['method'] !== undefined) r.method = enumOption(`${name}.method`, o['method'], COMPACTION_METHOD);
  if (o['ratio'] !== undefined) r.ratio = numberOption(`${name}.ratio`, o['ratio'], C.ratio);
  if (o['targetTokens'] !== undefined) r.targetTokens = count(`${name}.targetTokens`, o['targetTokens'], C.targetTokens.min, C.targetTokens.max);
  if (r.ratio !== undefined && r.targetTokens !== undefined) {
    throw invalidArgument(`${name}.targetTokens`, 'absent when ratio is given (give one of them)', r.targetTokens);
  }
  if (o['protect'] !== undefined) {
    const p = optionsObject(`${name}.protect`, o['protect']);
    knownKeys(`${name}.protect`, p, ['sinks', 'recent']);
    if (p['sinks'] !== undefined) r.sinks = count(`${name}.protect.sinks`, p['sinks'], C.sinks.min, C.sinks.max);
    if (p['recent'] !== undefined) r.recent = count(`${name}.protect.recent`, p['recent'], C.recent.min, C.recent.max);
  }
  if (o['chunkSize'] !== undefined) r.chunkSize = count(`${name}.chunkSize`, o['chunkSize'], C.chunkSize.min, C.chunkSize.max);
  if (o['ridge'] !== undefined) r.ridge = numberOption(`${name}.ridge`, o['ridge'], C.ridge);
  if (o['nnlsIterations'] !== undefined) r.nnlsIterations = count(`${name}.nnlsIterations`, o['nnlsIterations'], C.nnlsIterations.min, C.nnlsIterations.max);
  if (o['queries'] !== undefined) {
    const q = o['queries'];
    r.queries = q === 'recorded' || q === 'keys' ? q : layerArrays(`${name}.queries`, q);
  }
  if (o['heldOutQueries'] !== undefined) r.heldOutQueries = layerArrays(`${name}.heldOutQueries`, o['heldOutQueries']);
  if (o['queryPositions'] !== undefined) r.queryPositions = layerPositions(`${name}.queryPositions`, o['queryPositions']);
  if (o['heldOutPositions'] !== undefined) r.heldOutPositions = layerPositions(`${name}.heldOutPositions`, o['heldOutPositions']);
  if (o['layers'] !== undefined) r.layers = indexList(`${name}.layers`, o['layers']);
  if (o['heads'] !== undefined) r.heads = indexList(`${name}.heads`, o['heads']);
  if (o['threads'] !== undefined) r.threads = count(`${name}.threads`, o['threads'], C.threads.min, C.threads.max);
  if (o['onProgress'] !== undefined) {
    if (typeof o['onProgress'] !== 'function') throw invalidArgument(`${name}.onProgress`, 'a function', o['onProgress']);
    r.onProgress = o['onProgress'] as (fraction: number) => void;
  }
  if (o['signal'] !== undefined) {
    if (!(o['signal'] instanceof AbortSignal)) throw invalidArgument(`${name}.signal`, 'an AbortSignal', o['signal']);
    r.signal = o['signal'];
  }
  return r;
}

function merge(base: Resolved, call: Resolved): Resolved {
  const out: Resolved = { ...base };
  for (const [k, v] of Object.entries(call)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  // A per-call budget replaces the constructor's.
  if (call.ratio !== undefined) delete out.targetTokens;
  if (call.targetTokens !== undefined) delete out.ratio;
  return out;
}

/**
 * Attention Matching compaction: each stream (layer × kv head) keeps t of its T rows, gives
 * each kept row a new logit bias beta and a fitted value, so that attention of the reference
 * queries over the compacted stream matches attention over the original one. The kept keys
 * stay bit-exact as stored; values and beta are re-encoded like an append. Protected rows
 * (sinks, recent) stay unchanged.
 *
 * ```ts
 * const compactor = new Compactor({ method: 'omp', ratio: 0.1, protect: { sinks: 4, recent: 64 } });
 * const report = await compactor.compact(seq);   // off the event loop
 * ```
 *
 * Reference queries. By default each stream uses the queries recorded by
 * `attention(layer, q, { recordQueries: true })`. The fit is only as good as these queries
 * are like the ones that will read the compacted rows, and a prefill's own queries are not:
 * each saw only the rows before it. Two flows give better ones (both need nothing beyond
 * recording and truncate):
 * - *self-study* (best when generation follows): let the model continue the context of N
 *   tokens a few times (e.g. 8 sampled continuations of 64 tokens) with
 *   `recordQueries: true`, calling `seq.truncate(N)` after each (the recorded queries stay,
 *   the rows go); then `compact(seq)`. On stories260K at keep 10% this gives a held-out error
 *   of 0.18–0.19 against 0.61 for the best eviction policy (BENCHMARKS.md);
 * - *repeat-prefill*: after the context, run the model on "repeat the text above" + the same
 *   N tokens with recording on, then `seq.truncate(N)` and `compact(seq)`.
 * Queries recorded before the flow stay in the reservoir; start from a fresh reservoir
 * (a sequence whose prefill did not record) to fit to the flow's queries only.
 *
 * While compact() runs the sequence is busy: append, attention, truncate, fork, free,
 * evict and export throw BUSY; other sequences work normally. `cache.dispose()` meanwhile
 * returns at once: the compaction stops at its next batch of streams, the promise rejects
 * with DISPOSED (nothing is applied) and the cache's memory is released then. With
 * `{ signal }`, aborting stops it the same way and rejects with ABORTED, the sequence exactly
 * as before. A compaction is all or nothing: every stream is computed first, then all are
 * applied at once. `using compactor = ...` aborts its compactions still in flight at the end
 * of the scope (`await using` also waits for them).
 *
 * Online: with `online: { maxRows }`, call `maybeCompact(seq)` after each append; streams
 * longer than maxRows are compacted synchronously (older part by `ratio`), so generation
 * continues with bounded stream lengths.
 *
 * Device 'cuda': the rows are read and the fitted values and biases written by CUDA kernels;
 * the fit runs on the host threads, as on 'cpu', and gives the same rows.
 *
 * Caches with `rope` (keys before RoPE): the fit matches the logits the queries really give,
 * rot(q, p_q) · rot(k, p_k): it runs on a post-RoPE f32 copy of the streams (keys rotated at
 * their stored positions, recorded queries at their tokens' positions, given queries at
 * `queryPositions`), and the kept rows keep their stored pre-RoPE keys and positions
 * (docs/rope-compaction.md).
 */
export class Compactor {
  /** The options this compactor was made with. */
  readonly options: Readonly<CompactorOptions>;
  readonly #base: Resolved;
  readonly #online: { maxRows: number } | undefined;
  /** Abort functions of this compactor's compactions in flight, and their settled promises. */
  readonly #inFlight = new Map<Promise<void>, () => void>();

  /** Checks the options (a KVCacheError names the first bad one); no native work happens yet. */
  constructor(options: CompactorOptions) {
    const o = optionsObject('options', options);
    const base = resolve('options', o, ['online']);
    if (o['online'] !== undefined) {
      const on = optionsObject('options.online', o['online']);
      knownKeys('options.online', on, ['maxRows']);
      const maxRows = count('options.online.maxRows', on['maxRows'], C.maxRows.min, C.maxRows.max);
      if (base.ratio === undefined || base.ratio >= 1) throw invalidArgument('options.ratio', 'a number in (0, 1) with online compaction', base.ratio);
      const protectedRows = (base.sinks ?? C.sinks.default) + (base.recent ?? C.recent.default);
      if (maxRows <= protectedRows) {
        throw invalidArgument('options.online.maxRows', `more than the protected rows (sinks + recent = ${protectedRows})`, maxRows);
      }
      this.#online = { maxRows };
    }
    this.#base = base;
    this.options = Object.freeze({ ...(options as CompactorOptions) });
  }

  /**
   * Compacts `seq` off the event loop; resolves with the report once the results are applied.
   * With `signal`, aborting rejects with code 'ABORTED' and leaves the sequence unchanged.
   */
  compact(seq: Sequence, options?: CompactOptions): Promise<CompactionReport> {
    return this.#start(seq, options, false);
  }

  /** @internal Background maintenance (lib/maintain.ts): compact() at the lowest thread priority. */
  compactInBackground(seq: Sequence, options?: CompactOptions): Promise<CompactionReport> {
    return this.#start(seq, options, true);
  }

  #start(seq: Sequence, options: CompactOptions | undefined, background: boolean): Promise<CompactionReport> {
    try {
      const r = merge(this.#base, resolve('options', options));
      const signal = r.signal;
      if (signal?.aborted) throw abortedError('the compaction', signal);
      const spec = this.#spec(seq, r, false);
      if (background) spec.background = true;
      const onProgress = r.onProgress;
      const progress = onProgress
        ? (f: number) => {
            try {
              onProgress(f);
            } catch {
              // documented: ignored
            }
          }
        : null;
      const job = native().compact(seq.native, spec, progress);
      const onAbort = () => job.abort();
      signal?.addEventListener('abort', onAbort, { once: true });
      const promise = job.promise.then(
        (n) => toReport(n),
        (error: unknown) => {
          // The native error says ABORTED; rethrow it with the signal's reason as the cause.
          if (signal?.aborted && error instanceof KVCacheError && error.code === 'ABORTED') throw abortedError('the compaction', signal);
          throw error;
        },
      );
      const settled = promise.then(
        () => undefined,
        () => undefined,
      );
      this.#inFlight.set(settled, job.abort);
      void settled.then(() => {
        signal?.removeEventListener('abort', onAbort);
        this.#inFlight.delete(settled);
      });
      seq.trackCompaction(job.abort, promise);
      return promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** `using compactor = new Compactor(...)`: aborts this compactor's compactions still in flight (they reject with ABORTED). */
  [disposeSymbol](): void {
    for (const abort of this.#inFlight.values()) abort();
  }

  /** `await using compactor = ...`: aborts this compactor's compactions in flight and waits until they settle. */
  async [asyncDisposeSymbol](): Promise<void> {
    const settled = [...this.#inFlight.keys()];
    this[disposeSymbol]();
    await Promise.all(settled);
  }

  /** Compacts `seq` on the calling thread (blocks it): for small sequences and online use. */
  compactSync(seq: Sequence, options?: CompactOptions): CompactionReport {
    const r = merge(this.#base, resolve('options', options));
    if (r.signal?.aborted) throw abortedError('the compaction', r.signal);
    return toReport(native().compactSync(seq.native, this.#spec(seq, r, false)));
  }

  /**
   * Online compaction (needs `online: { maxRows }`): compacts, synchronously, every stream of
   * `seq` longer than maxRows; returns null when none is. Cheap when nothing is over budget.
   */
  maybeCompact(seq: Sequence, options?: CompactOptions): CompactionReport | null {
    if (!this.#online) throw new KVCacheError('INVALID_ARGUMENT', 'maybeCompact needs a Compactor made with online: { maxRows }');
    const r = merge(this.#base, resolve('options', options));
    if (r.signal?.aborted) throw abortedError('the compaction', r.signal);
    const n = native().compactSync(seq.native, this.#spec(seq, r, true));
    return n.streams.length === 0 ? null : toReport(n);
  }

  #spec(seq: Sequence, r: Resolved, online: boolean): NativeCompactionSpec {
    if (!Sequence.isSequence(seq)) throw invalidArgument('seq', 'a Sequence', seq);
    seq.checkAlive();
    const c = seq.cache.config;
    if (r.ratio === undefined && r.targetTokens === undefined) {
      throw invalidArgument('options.ratio', 'a number in (0, 1] (or give targetTokens)', undefined);
    }
    const checkLayers = (name: string, arrays: ReadonlyArray<Float32Array | null>) => {
      if (arrays.length !== c.layers) throw invalidArgument(name, `an array of ${c.layers} entries (one per layer)`, arrays);
      const token = c.queryHeads * c.headDim;
      arrays.forEach((a, l) => {
        if (a && (a.length === 0 || a.length % token !== 0)) {
          throw new KVCacheError('SHAPE_MISMATCH', `${name}[${l}] must hold n × queryHeads × headDim = n × ${token} elements with n ≥ 1, got ${a.length}`);
        }
      });
    };
    let querySource: QuerySourceName = 'recorded';
    let queries: Array<Float32Array | null> | null = null;
    if (r.queries === 'keys') querySource = 'keys';
    else if (Array.isArray(r.queries)) {
      checkLayers('options.queries', r.queries);
      querySource = 'given';
      queries = [...r.queries];
    }
    if (r.heldOutQueries) checkLayers('options.heldOutQueries', r.heldOutQueries);
    const checkPositions = (name: string, positions: ReadonlyArray<Int32Array | null>, arrays: ReadonlyArray<Float32Array | null> | null, of: string) => {
      if (!c.rope) throw invalidArgument(name, 'absent: positions of given queries need a cache with the rope option', positions);
      if (positions.length !== c.layers) throw invalidArgument(name, `an array of ${c.layers} entries (one per layer)`, positions);
      positions.forEach((p, l) => {
        const tokens = arrays?.[l] ? arrays[l]!.length / (c.queryHeads * c.headDim) : 0;
        if (p && p.length !== tokens) {
          throw new KVCacheError('SHAPE_MISMATCH', `${name}[${l}] must hold one position per token of ${of}[${l}] (${tokens}), got ${p.length}`);
        }
      });
    };
    if (r.queryPositions) checkPositions('options.queryPositions', r.queryPositions, queries, 'options.queries');
    if (r.heldOutPositions) checkPositions('options.heldOutPositions', r.heldOutPositions, r.heldOutQueries ?? null, 'options.heldOutQueries');
    r.layers?.forEach((l, i) => {
      if (l >= c.layers) throw invalidArgument(`options.layers[${i}]`, `an integer in [0, ${c.layers})`, l);
    });
    r.heads?.forEach((h, i) => {
      if (h >= c.kvHeads) throw invalidArgument(`options.heads[${i}]`, `an integer in [0, ${c.kvHeads})`, h);
    });
    return {
      method: r.method ?? C.method.default,
      ratio: r.ratio ?? 0,
      targetTokens: r.targetTokens ?? 0,
      sinks: r.sinks ?? C.sinks.default,
      recent: r.recent ?? C.recent.default,
      chunkSize: r.chunkSize ?? C.chunkSize.default,
      ridge: r.ridge ?? C.ridge.default,
      nnlsIterations: r.nnlsIterations ?? C.nnlsIterations.default,
      threads: r.threads ?? c.threads,
      layers: r.layers ? Int32Array.from(r.layers) : null,
      heads: r.heads ? Int32Array.from(r.heads) : null,
      querySource,
      queries,
      heldOut: r.heldOutQueries ? [...r.heldOutQueries] : null,
      queryPositions: r.queryPositions ? [...r.queryPositions] : null,
      heldOutPositions: r.heldOutPositions ? [...r.heldOutPositions] : null,
      online,
      maxRows: online ? this.#online!.maxRows : 0,
    };
  }
}

function toReport(n: NativeCompactionReport): CompactionReport {
  const ms = { read: n.secondsRead * 1e3, scores: 0, select: 0, nnls: 0, values: 0, diagnostics: 0, apply: n.secondsApply * 1e3, total: n.secondsTotal * 1e3 };
  let maxErr = 0;
  let sumErr = 0;
  const streams = n.streams.map((s): StreamCompactionReport => {
    const m = {
      scores: s.secondsScores * 1e3,
      select: s.secondsSelect * 1e3,
      nnls: s.secondsNnls * 1e3,
      values: s.secondsValues * 1e3,
      diagnostics: s.secondsDiagnostics * 1e3,
    };
    ms.scores += m.scores;
    ms.select += m.select;
    ms.nnls += m.nnls;
    ms.values += m.values;
    ms.diagnostics += m.diagnostics;
    maxErr = Math.max(maxErr, s.outputError);
    sumErr += s.outputError;
    return {
      layer: s.layer,
      kvHead: s.kvHead,
      rowsBefore: s.rowsBefore,
      rowsAfter: s.rowsAfter,
      queries: s.queries,
      querySource: s.querySource,
      outputError: s.outputError,
      massError: s.massError,
      heldOutOutputError: Number.isNaN(s.heldOutOutputError) ? undefined : s.heldOutOutputError,
      heldOutMassError: Number.isNaN(s.heldOutMassError) ? undefined : s.heldOutMassError,
      ridgeRaises: s.ridgeRaises,
      milliseconds: m,
    };
  });
  return {
    streams,
    rowsBefore: n.rowsBefore,
    rowsAfter: n.rowsAfter,
    bytesBefore: n.blocksBefore * n.blockBytes,
    bytesAfter: n.blocksAfter * n.blockBytes,
    blocksFreed: n.blocksFreed,
    bytesFreed: n.bytesFreed,
    maxOutputError: maxErr,
    meanOutputError: streams.length ? sumErr / streams.length : 0,
    milliseconds: ms,
  };
}
