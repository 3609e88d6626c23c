// Eviction policies (ARCHITECTURE §4.3): immutable policy objects made by static factories,
// the checks of budgets, and the driver behind Sequence.evict. Scores are computed natively
// (except custom ones); this file only validates and translates.
import { KVCacheError, invalidArgument, shapeMismatch } from './errors';
import { native, type NativeBudgetSpec, type NativePolicySpec } from './native/binding';
import type { Sequence } from './sequence';
import type { EvictionBudget, EvictionReport, StreamScoreView } from './types';
import { EVICTION_OPTIONS, PER_HEAD, POSITIONS, SCHEDULE, type ScoreSourceName } from './generated/schema';
import { enumOption, indexBelow, isFloat32Array, isInteger, knownKeys, optionsObject } from './validate';

/** The policies `EvictionPolicy`'s factories make. */
export type EvictionPolicyKind =
  | 'slidingWindow'
  | 'streamingLLM'
  | 'h2o'
  | 'snapKV'
  | 'tova'
  | 'keyNorm'
  | 'random'
  | 'custom';

/** Rows every policy can protect: they are kept before any scored row. */
export interface ProtectOptions {
  /** The first `sinks` rows of every stream (attention sinks). */
  sinks?: number;
  /** The last `recent` rows of every stream. */
  recent?: number;
}

/** Scores of the rows of one stream, higher = keep; one finite number (or ±Infinity) per row. */
export type ScoreFunction = (view: StreamScoreView) => Float32Array;

/** Options of `EvictionPolicy.custom`. */
export interface CustomPolicyOptions extends ProtectOptions {
  /** Scores the rows of one stream (higher = keep). */
  fn: ScoreFunction;
  /** Pass dequantized keys in the view. Default false. */
  keys?: boolean;
  /** Pass dequantized values in the view. Default false. */
  values?: boolean;
}

/** Default protected first rows of the scoring policies (h2o, snapKV's sinks, tova, keyNorm, random, custom). */
export const DEFAULT_SINKS: number = EVICTION_OPTIONS.sinks.default;
/** Default protected last rows of the scoring policies (h2o, tova, keyNorm, random, custom). */
export const DEFAULT_RECENT: number = EVICTION_OPTIONS.recent.default;

/** What each policy scores rows by, by the name the native side knows (schema/options.json). */
const SOURCE: Record<EvictionPolicyKind, ScoreSourceName> = {
  slidingWindow: 'recency', streamingLLM: 'recency', h2o: 'accumulated', snapKV: 'observation', tova: 'lastQuery',
  keyNorm: 'keyNorm', random: 'random', custom: 'given',
};

const MAX_ROWS = EVICTION_OPTIONS.keep.max;

function count(name: string, value: unknown, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (!isInteger(value) || value < min || value > MAX_ROWS) throw invalidArgument(name, `an integer in [${min}, ${MAX_ROWS}]`, value);
  return value;
}

interface PolicyFields {
  kind: EvictionPolicyKind;
  sinks: number;
  recent: number;
  window?: number;
  pool?: number;
  seed?: number;
  rankPositions?: boolean;
  fn?: ScoreFunction;
  wantKeys?: boolean;
  wantValues?: boolean;
  defaultKeep?: number;
}

/**
 * Which rows to drop when a sequence must shrink. Policies are immutable values made by the
 * static factories and applied with `seq.evict(policy, budget)`. Each scores the rows of every
 * stream (higher = keep); the budget decides how many rows each stream keeps; protected rows
 * (`sinks`, `recent`) are kept first, then the best-scored rows, ties going to the older row.
 *
 * | policy | score | defaults |
 * |---|---|---|
 * | slidingWindow({ window }) | recency | sinks 0, recent = window; budget defaults to { keep: window } |
 * | streamingLLM({ sinks, window }) | recency | sinks 4, recent = window; budget defaults to { keep: sinks + window } |
 * | h2o({ recent }) | accumulated attention mass (`accumulateScores`) | sinks 4, recent 32 |
 * | snapKV({ window, pool }) | attention of the last `window` recorded query tokens, max-pooled | window 32, pool 7, sinks 4, recent = window |
 * | tova() | attention of the newest recorded query token | sinks 4, recent 32 |
 * | keyNorm() | −‖k‖₂ (low-norm keys kept first) | sinks 4, recent 32 |
 * | random(seed) | a hash of (seed, stream, row) | sinks 4, recent 32 |
 * | custom(fn) | fn(view) | sinks 4, recent 32 |
 */
export class EvictionPolicy {
  /** Which factory made the policy. */
  readonly kind: EvictionPolicyKind;
  /** Protected first rows per stream. */
  readonly sinks: number;
  /** Protected last rows per stream. */
  readonly recent: number;
  /** snapKV: observation window in query tokens; slidingWindow/streamingLLM: window in rows. */
  readonly window: number | undefined;
  /** snapKV: max-pool kernel size (odd). */
  readonly pool: number | undefined;
  /** random: the seed. */
  readonly seed: number | undefined;
  /** snapKV, tova on a cache with rope: rows and queries rotated at their ranks (positions 'rank'). */
  readonly rankPositions: boolean;
  /** Rows per stream kept when evict() gets no budget (slidingWindow, streamingLLM only). */
  readonly defaultKeep: number | undefined;
  /** @internal */
  readonly fn: ScoreFunction | undefined;
  /** @internal */
  readonly wantKeys: boolean;
  /** @internal */
  readonly wantValues: boolean;
  /** Brand: only policies made by the factories have it (Object.create(EvictionPolicy.prototype) does not). */
  readonly #brand = true;

  private constructor(f: PolicyFields) {
    this.kind = f.kind;
    this.sinks = f.sinks;
    this.recent = f.recent;
    this.window = f.window;
    this.rankPositions = f.rankPositions ?? false;
    this.pool = f.pool;
    this.seed = f.seed;
    this.defaultKeep = f.defaultKeep;
    this.fn = f.fn;
    this.wantKeys = f.wantKeys ?? false;
    this.wantValues = f.wantValues ?? false;
    Object.freeze(this);
  }

  /** Keeps the newest `window` rows of every stream (plus `sinks` first rows, default 0). */
  static slidingWindow(options: { window: number; sinks?: number }): EvictionPolicy {
    const o = optionsObject('options', options);
    knownKeys('options', o, ['window', 'sinks']);
    const window = count('options.window', o['window'], NaN, 0);
    if (Number.isNaN(window)) throw invalidArgument('options.window', 'an integer in [0, 2147483647]', undefined);
    const sinks = count('options.sinks', o['sinks'], 0);
    return new EvictionPolicy({ kind: 'slidingWindow', sinks, recent: window, window, defaultKeep: Math.min(MAX_ROWS, sinks + window) });
  }

  /** StreamingLLM: the first `sinks` rows (default 4) and the newest `window` rows. */
  static streamingLLM(options: { sinks?: number; window: number }): EvictionPolicy {
    const o = optionsObject('options', options);
    knownKeys('options', o, ['window', 'sinks']);
    const window = count('options.window', o['window'], NaN, 0);
    if (Number.isNaN(window)) throw invalidArgument('options.window', 'an integer in [0, 2147483647]', undefined);
    const sinks = count('options.sinks', o['sinks'], DEFAULT_SINKS);
    return new EvictionPolicy({ kind: 'streamingLLM', sinks, recent: window, window, defaultKeep: Math.min(MAX_ROWS, sinks + window) });
  }

  /**
   * H2O: heavy hitters by the attention mass accumulated with `attention(..., { accumulateScores: true })`,
   * plus the recent window. Evicting a sequence whose streams never accumulated scores throws
   * INVALID_ARGUMENT (scoring them as zeros would silently keep the oldest rows).
   */
  static h2o(options: ProtectOptions = {}): EvictionPolicy {
    const p = protect(options, []);
    return new EvictionPolicy({ kind: 'h2o', ...p });
  }

  /**
   * SnapKV: each row's attention from the newest `window` recorded query tokens (the newest
   * window × queriesPerHead vectors of the `recentQueries` ring, all query heads of the GQA group
   * averaged; fewer if fewer were recorded), softmax over all rows without a causal mask (the
   * recorded queries carry no positions; only the window's own rows are affected), max-pooled
   * with kernel `pool` separately over the rows before the window and the window's rows. The
   * window's rows are protected (`recent` defaults to `window`). Needs `recordQueries: true`
   * and a cache whose `recentQueries` ≥ window × queryHeads / kvHeads for the full window.
   * On a cache with `rope`, rows and queries are rotated as attention rotates them: at their
   * stored positions, or at their ranks with `positions: 'rank'` (docs/rope-eviction.md).
   */
  static snapKV(options: { window?: number; pool?: number; positions?: 'stored' | 'rank' } & ProtectOptions = {}): EvictionPolicy {
    const o = optionsObject('options', options);
    knownKeys('options', o, ['window', 'pool', 'sinks', 'recent', 'positions']);
    const window = count('options.window', o['window'], EVICTION_OPTIONS.window.default, 1);
    const pool = count('options.pool', o['pool'], EVICTION_OPTIONS.pool.default, EVICTION_OPTIONS.pool.min);
    if (pool % 2 === 0) throw invalidArgument('options.pool', 'an odd positive integer', pool);
    const sinks = count('options.sinks', o['sinks'], DEFAULT_SINKS);
    const recent = count('options.recent', o['recent'], window);
    return new EvictionPolicy({ kind: 'snapKV', sinks, recent, window, pool, rankPositions: rankPositions(o['positions']) });
  }

  /**
   * TOVA: the attention of the newest recorded query token (the newest queryHeads / kvHeads
   * vectors of the `recentQueries` ring, averaged over the GQA group). Needs `recordQueries: true`.
   * `positions` on a cache with `rope`: as for snapKV.
   */
  static tova(options: ProtectOptions & { positions?: 'stored' | 'rank' } = {}): EvictionPolicy {
    const o = optionsObject('options', options);
    return new EvictionPolicy({ kind: 'tova', ...protect(o, ['positions']), rankPositions: rankPositions(o['positions']) });
  }

  /** Key-norm: rows whose (dequantized) keys have the lowest L2 norm are kept first. */
  static keyNorm(options: ProtectOptions = {}): EvictionPolicy {
    return new EvictionPolicy({ kind: 'keyNorm', ...protect(options, []) });
  }

  /** A deterministic random choice (a baseline): the same seed and stream give the same rows. */
  static random(seed = 0, options: ProtectOptions = {}): EvictionPolicy {
    if (!isInteger(seed) || seed < 0 || seed > 0xffffffff) throw invalidArgument('seed', 'an integer in [0, 4294967295]', seed);
    return new EvictionPolicy({ kind: 'random', seed, ...protect(options, []) });
  }

  /**
   * Scores from your function, called once per stream with a view of it; it returns a
   * Float32Array of `length` scores (higher = keep; NaN is rejected). Pass `{ fn, keys: true }`
   * (or `custom(fn, { keys: true })`) to get dequantized keys in the view.
   */
  static custom(fn: ScoreFunction | CustomPolicyOptions, options: Omit<CustomPolicyOptions, 'fn'> = {}): EvictionPolicy {
    let o: Record<string, unknown>;
    if (typeof fn === 'function') {
      o = { ...optionsObject('options', options), fn };
    } else {
      o = optionsObject('options', fn);
      if (options !== undefined && Object.keys(options).length > 0) throw invalidArgument('options', 'omitted when the first argument is an options object', options);
    }
    knownKeys('options', o, ['fn', 'keys', 'values', 'sinks', 'recent']);
    if (typeof o['fn'] !== 'function') throw invalidArgument('options.fn', 'a function (view) => Float32Array', o['fn']);
    for (const k of ['keys', 'values']) {
      if (o[k] !== undefined && typeof o[k] !== 'boolean') throw invalidArgument(`options.${k}`, 'a boolean', o[k]);
    }
    const p = protect({ sinks: o['sinks'], recent: o['recent'] } as ProtectOptions, []);
    return new EvictionPolicy({
      kind: 'custom', ...p, fn: o['fn'] as ScoreFunction, wantKeys: o['keys'] === true, wantValues: o['values'] === true,
    });
  }

  /** The scores this policy gives the rows of one stream (higher = keep), without evicting. */
  scores(seq: Sequence, layer: number, kvHead: number): Float32Array {
    seq.checkAlive();
    indexBelow('layer', layer, seq.cache.config.layers);
    indexBelow('kvHead', kvHead, seq.cache.config.kvHeads);
    if (this.kind === 'custom') return customScores(this, seq, layer, kvHead);
    return native().policyScores(seq.native, this.spec(null), layer, kvHead);
  }

  /** @internal */
  spec(given: Float32Array | null): NativePolicySpec {
    return {
      source: SOURCE[this.kind], sinks: this.sinks, recent: this.recent, window: this.kind === 'snapKV' ? this.window! : 0,
      pool: this.pool ?? EVICTION_OPTIONS.pool.min, seed: this.seed ?? EVICTION_OPTIONS.seed.default, given,
      rankPositions: this.rankPositions,
    };
  }

  /** The policy and its protection, e.g. `EvictionPolicy.h2o(sinks 4, recent 32)`. */
  toString(): string {
    return `EvictionPolicy.${this.kind}(sinks ${this.sinks}, recent ${this.recent})`;
  }

  /** True for policies made by the static factories (not for look-alikes or structured clones). */
  static isPolicy(value: unknown): value is EvictionPolicy {
    return typeof value === 'object' && value !== null && #brand in value;
  }
}

// The positions option of the query-scored policies (snapKV, tova): 'stored' (default) or 'rank'.
function rankPositions(value: unknown): boolean {
  return value !== undefined && enumOption('options.positions', value, POSITIONS) === 'rank';
}

function protect(options: unknown, extra: readonly string[]): { sinks: number; recent: number } {
  const o = optionsObject('options', options);
  knownKeys('options', Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)), ['sinks', 'recent', ...extra]);
  return { sinks: count('options.sinks', o['sinks'], DEFAULT_SINKS), recent: count('options.recent', o['recent'], DEFAULT_RECENT) };
}

function customScores(policy: EvictionPolicy, seq: Sequence, layer: number, kvHead: number): Float32Array {
  const addon = native();
  const positions = addon.streamPositions(seq.native, layer, kvHead);
  const length = positions.length;
  const view: StreamScoreView = {
    layer, kvHead, length, positions,
    scores: addon.streamScores(seq.native, layer, kvHead) ?? new Float32Array(length),
  };
  if (policy.wantKeys || policy.wantValues) {
    const rows = seq.native.read(layer, kvHead);
    if (policy.wantKeys) view.keys = rows.keys;
    if (policy.wantValues) view.values = rows.values;
  }
  const scores = policy.fn!(view);
  if (!isFloat32Array(scores)) throw invalidArgument(`custom scores of layer ${layer} kv head ${kvHead}`, 'a Float32Array', scores);
  if (scores.length !== length) {
    throw shapeMismatch(`custom scores of layer ${layer} kv head ${kvHead} must hold one score per row (${length}), got ${scores.length}`);
  }
  for (let i = 0; i < length; i++) {
    if (Number.isNaN(scores[i])) throw invalidArgument(`custom scores of layer ${layer} kv head ${kvHead}`, 'free of NaN', `NaN at row ${i}`);
  }
  return scores;
}

const BUDGET_OPTIONS = ['keep', 'ratio', 'layers', 'perHead', 'safeguard', 'schedule', 'slope'] as const;

function fraction(name: string, value: unknown): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) throw invalidArgument(name, 'a number in [0, 1]', value);
  return value;
}

/** Checks a budget and translates it (exported for tests and tools). */
export function budgetSpec(budget: EvictionBudget, layers: number): NativeBudgetSpec {
  const o = optionsObject('budget', budget);
  knownKeys('budget', o, BUDGET_OPTIONS);
  const given = (['keep', 'ratio', 'layers'] as const).filter((k) => o[k] !== undefined);
  if (given.length !== 1) {
    throw invalidArgument('budget', 'an object with exactly one of keep, ratio or layers', given.length === 0 ? 'none of them' : `${given.join(' and ')}`);
  }
  const spec: NativeBudgetSpec = {
    kind: 'ratio', keep: 0, ratio: EVICTION_OPTIONS.ratio.default, layerRatios: null, perHead: 'uniform',
    safeguard: EVICTION_OPTIONS.safeguard.default, schedule: 'uniform', slope: EVICTION_OPTIONS.slope.default,
  };
  if (o['keep'] !== undefined) {
    spec.kind = 'keep';
    spec.keep = count('budget.keep', o['keep'], 0);
  } else if (o['ratio'] !== undefined) {
    spec.kind = 'ratio';
    spec.ratio = fraction('budget.ratio', o['ratio']);
  } else {
    const l = o['layers'];
    if (!Array.isArray(l) && !(l instanceof Float64Array) && !(l instanceof Float32Array)) {
      throw invalidArgument('budget.layers', `an array of ${layers} ratios in [0, 1]`, l);
    }
    const arr = Array.from(l as ArrayLike<number>);
    if (arr.length !== layers) throw invalidArgument('budget.layers', `an array of ${layers} ratios (one per layer)`, l);
    arr.forEach((r, i) => fraction(`budget.layers[${i}]`, r));
    spec.kind = 'layers';
    spec.layerRatios = Float64Array.from(arr);
  }
  if (o['perHead'] !== undefined) spec.perHead = enumOption('budget.perHead', o['perHead'], PER_HEAD);
  if (o['safeguard'] !== undefined) spec.safeguard = fraction('budget.safeguard', o['safeguard']);
  if (o['schedule'] !== undefined) spec.schedule = enumOption('budget.schedule', o['schedule'], SCHEDULE);
  if (spec.schedule === 'pyramid' && spec.kind === 'layers') throw invalidArgument('budget.schedule', "'uniform' when budget.layers is given", spec.schedule);
  if (o['slope'] !== undefined) spec.slope = fraction('budget.slope', o['slope']);
  return spec;
}

/** @internal The body of Sequence.evict. */
export function evictSequence(seq: Sequence, policy: EvictionPolicy, budget: EvictionBudget | undefined): EvictionReport {
  const t0 = performance.now();
  seq.checkAlive();
  // The brand, not instanceof: Object.create(EvictionPolicy.prototype) passes instanceof
  // but holds no valid policy, and would otherwise evict with made-up defaults.
  if (!EvictionPolicy.isPolicy(policy)) throw invalidArgument('policy', 'an EvictionPolicy (made by its static factories)', policy);
  const c = seq.cache.config;
  let b = budget;
  if (b === undefined) {
    if (policy.defaultKeep === undefined) {
      throw new KVCacheError('INVALID_ARGUMENT', `budget is required for ${policy.kind} (e.g. { ratio: 0.25 } or { keep: 1024 })`);
    }
    b = { keep: policy.defaultKeep };
  }
  const budgetNative = budgetSpec(b, c.layers);
  let given: Float32Array | null = null;
  if (policy.kind === 'custom') {
    const parts: Float32Array[] = [];
    let total = 0;
    for (let l = 0; l < c.layers; l++) {
      for (let h = 0; h < c.kvHeads; h++) {
        const s = customScores(policy, seq, l, h);
        parts.push(s);
        total += s.length;
      }
    }
    given = new Float32Array(total);
    let offset = 0;
    for (const p of parts) {
      given.set(p, offset);
      offset += p.length;
    }
  }
  const r = native().evict(seq.native, policy.spec(given), budgetNative);
  return {
    rowsBefore: r.rowsBefore,
    rowsAfter: r.rowsAfter,
    keptPerStream: r.keptPerStream,
    blocksFreed: r.blocksFreed,
    bytesFreed: r.bytesFreed,
    milliseconds: performance.now() - t0,
  };
}
