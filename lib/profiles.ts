// Profiles: named presets that combine the levers (storage formats, Hadamard rotation, a
// memory target kept by background maintenance, sparse decode) for a model shape. One table,
// PROFILES, holds every setting; a new lever (e.g. precision tiers) is one more field of a
// table entry and one line in profile() (README "Profiles", measured bytes and quality in
// EVALUATION.md).
import { Compactor, type CompactionMethod } from './compactor';
import { invalidArgument, KVCacheError } from './errors';
import type { MaintainOptions } from './maintain';
import type { AttentionOptions, KVCacheOptions, Storage } from './types';
import { knownKeys, optionsObject } from './validate';

/** The presets: 'quality' (every row, int8), 'balanced' (1/6 of f16's bytes per token), 'tiny' (1/16). */
export type ProfileName = 'quality' | 'balanced' | 'tiny';

/** The model shape a profile is made for (the cache options a profile does not choose). */
export interface ProfileShape {
  /** Model layers. */
  layers: number;
  /** Key/value heads per layer. */
  kvHeads: number;
  /** Head dimension. */
  headDim: number;
  /** Query heads (a multiple of kvHeads); default kvHeads. */
  queryHeads?: number;
  /** Rows per block (cache option). */
  blockSize?: number;
  /** Pool budget (cache option). */
  maxBytes?: number;
  /** 'cpu' or 'cuda' (cache option). */
  device?: 'cpu' | 'cuda';
  /** Attention threads (cache option). */
  threads?: number;
}

/** What `KVCache.profile(name, shape)` returns: use `options` for the cache, `maintain` (when not null) for each sequence, `attention` for decode steps. */
export interface Profile {
  /** The preset's name. */
  name: ProfileName;
  /** Options of `new KVCache(options)`: the shape and the profile's storage. */
  options: KVCacheOptions;
  /** Options of `cache.maintain(seq, options)`, or null when the profile keeps every row. A fresh Compactor per call of profile(). */
  maintain: MaintainOptions | null;
  /** Options for `seq.attention` on decode steps (empty when the profile reads every row). */
  attention: AttentionOptions;
  /** The memory target as a fraction of f16's bytes per token, or null. */
  targetFractionOfF16: number | null;
}

export interface ProfileEntry {
  keys: Storage;
  values: Storage;
  /** Hadamard rotation of the keys before quantization (only for a power-of-two headDim). */
  rotate: boolean;
  /** Memory target: this fraction of f16's bytes per token (KVCache.bytesPerToken), kept by maintain(); null: none. */
  targetFractionOfF16: number | null;
  /** Attention Matching ratio of each maintenance pass's window (lib/maintain.ts). */
  compactionRatio: number;
  /** How each pass picks the kept rows (Compactor option `method`). */
  compactionMethod: CompactionMethod;
  keepRecent: number;
  sinks: number;
  /**
   * Precision tiers: the newest `recentRows` rows of every stream stay in f16 (the top tier),
   * older rows age into keys/values above (the lowest tier, which compaction writes); null:
   * every row in keys/values. Used only where keys/values take at most half of f16's bytes
   * per row (makeProfile).
   */
  tiers: { recentRows: number } | null;
}

/**
 * The presets. Measured bytes per token and quality on both real models: EVALUATION.md,
 * "Profiles". No preset uses tiers: at the evaluated contexts (≤ 512 tokens) an f16 top tier
 * holds its window plus up to a lower-tier block of rows (96 at head_dim 64, int4), which is
 * most of a 1/16 or 1/6 target; measured with tiers, balanced and tiny were larger and worse
 * (EVALUATION.md, "Profiles with precision tiers").
 */
export const PROFILES: Readonly<Record<ProfileName, Readonly<ProfileEntry>>> = Object.freeze({
  // Every row kept; int8 keys and values (rotated keys) cost about half of f16 at near-f16 quality.
  quality: Object.freeze({ keys: 'int8', values: 'int8', rotate: true, targetFractionOfF16: null, compactionRatio: 0.5, compactionMethod: 'omp', keepRecent: 64, sinks: 4, tiers: null }),
  // A sixth of f16: int8 keys, int4 values, and background compaction of the oldest rows.
  // OMP picks the kept rows: on all 70 shakes64 passages +0.0033 ΔNLL / 96.16% top-1 against
  // +0.0036 / 95.73% with 'highest-attention' (EVALUATION.md, "Profiles").
  balanced: Object.freeze({ keys: 'int8', values: 'int4', rotate: true, targetFractionOfF16: 1 / 6, compactionRatio: 0.5, compactionMethod: 'omp', keepRecent: 64, sinks: 4, tiers: null }),
  // A sixteenth of f16: int4 keys and values and a tighter background compaction.
  tiny: Object.freeze({ keys: 'int4', values: 'int4', rotate: true, targetFractionOfF16: 1 / 16, compactionRatio: 0.25, compactionMethod: 'omp', keepRecent: 32, sinks: 4, tiers: null }),
});

const SHAPE_KEYS = ['layers', 'kvHeads', 'headDim', 'queryHeads', 'blockSize', 'maxBytes', 'device', 'threads'] as const;

/**
 * The cache options, maintenance options and decode attention options of a named profile
 * for a model shape. `f16BytesPerToken` is `KVCache.bytesPerToken` of the same shape in f16
 * (passed in so that this module stays free of the native layer).
 */
export function makeProfile(name: ProfileName, shape: ProfileShape, f16BytesPerToken: (options: KVCacheOptions) => number): Profile {
  const entry = (PROFILES as Record<string, ProfileEntry | undefined>)[name as string];
  if (entry === undefined || !Object.prototype.hasOwnProperty.call(PROFILES, name)) {
    throw invalidArgument('name', `one of ${Object.keys(PROFILES).map((n) => `'${n}'`).join(', ')}`, name);
  }
  return profileOf(name, entry, shape, f16BytesPerToken);
}

/** @internal makeProfile for a table entry (tests pass entries of their own, e.g. with tiers). */
export function profileOf(name: ProfileName, entry: Readonly<ProfileEntry>, shape: ProfileShape,
  f16BytesPerToken: (options: KVCacheOptions) => number): Profile {
  const s = optionsObject('shape', shape);
  knownKeys('shape', s, SHAPE_KEYS);
  const headDim = s['headDim'];
  const powerOfTwo = typeof headDim === 'number' && headDim > 0 && (headDim & (headDim - 1)) === 0;
  const options: KVCacheOptions = {
    ...(shape as KVCacheOptions),
    keys: entry.keys,
    values: entry.values,
    rotate: entry.rotate && powerOfTwo,
  };
  // Tiers share one block size (a top-tier block): an aged block holds a whole multiple of the
  // top tier's rows, so tiers save bytes only when the older rows' format is at most half of
  // f16's bytes per row (not so for tiny heads, e.g. head_dim 8, where per-row costs dominate).
  const f16Rate = f16BytesPerToken({ ...(shape as KVCacheOptions), keys: 'f16', values: 'f16' });
  const lowerRate = f16BytesPerToken({ ...(shape as KVCacheOptions), keys: entry.keys, values: entry.values });
  if (entry.tiers && 2 * lowerRate <= f16Rate) {
    // The recent rows in f16, the older ones (and everything compaction writes) in keys/values.
    options.keys = 'f16';
    options.values = 'f16';
    options.tiers = [{ rows: entry.tiers.recentRows, keys: 'f16', values: 'f16' }, { keys: entry.keys, values: entry.values }];
  }
  let maintain: MaintainOptions | null = null;
  if (entry.targetFractionOfF16 !== null) {
    const f16 = f16Rate;
    if (!(f16 > 0)) throw new KVCacheError('INTERNAL', 'profile: f16 bytes per token could not be computed');
    maintain = {
      bytesPerToken: entry.targetFractionOfF16 * f16,
      policy: new Compactor({ ratio: entry.compactionRatio, method: entry.compactionMethod }),
      keepRecent: entry.keepRecent,
      sinks: entry.sinks,
    };
  }
  return { name, options, maintain, attention: {}, targetFractionOfF16: entry.targetFractionOfF16 };
}
