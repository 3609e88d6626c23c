// The lowRank cache option: checks and defaults (limits from schema/options.json, section
// lowRank), and the flat fields it crosses to native code as.
import { invalidArgument } from './errors';
import { LOW_RANK_OPTIONS } from './generated/schema';
import type { LowRankConfig } from './types';
import { integerOption, knownKeys, optionsObject } from './validate';

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * The default groupSize: min(32, headDim), and with lowRank the largest divisor of the ranks
 * and headDim up to 32 (coefficient rows are quantized in groups along the rank).
 */
export function defaultGroupSize(lowRank: unknown, headDim: number): number {
  const o = lowRank && typeof lowRank === 'object' ? (lowRank as Record<string, unknown>) : undefined;
  const rank = (x: unknown) => typeof x === 'number' && Number.isInteger(x) && x >= 2 && x % 2 === 0;
  const keys = o?.['keys'], values = o?.['values'] ?? keys;
  if (rank(keys) && rank(values)) return Math.min(32, gcd(gcd(keys as number, values as number), headDim));
  return Math.min(32, headDim);
}

/** null when the option is absent (full-rank storage). */
export function resolveLowRank(value: unknown, headDim: number, groupSize: number, rotated: boolean): LowRankConfig | null {
  if (value === undefined || value === null) return null;
  const L = LOW_RANK_OPTIONS;
  const o = optionsObject('options.lowRank', value);
  knownKeys('options.lowRank', o, ['keys', 'values', 'calibrationRows']);
  const keys = integerOption('options.lowRank.keys', o['keys'], L.keys);
  const values = o['values'] === undefined ? keys : integerOption('options.lowRank.values', o['values'], L.values);
  for (const [name, rank] of [["keys", keys], ["values", values]] as const) {
    if (rank % 2 !== 0 || rank > headDim) throw invalidArgument(`options.lowRank.${name}`, `an even rank in [2, headDim (${headDim})]`, rank);
  }
  // values === headDim keeps values unprojected, in the cache's value format.
  for (const rank of [keys, values]) {
    if (rank % groupSize !== 0) throw invalidArgument('options.groupSize', `a divisor of the lowRank ranks (${keys}, ${values})`, groupSize);
  }
  if (rotated) throw invalidArgument('options.rotate', 'false with lowRank (coefficients are already decorrelated)', true);
  const calibrationRows = o['calibrationRows'] === undefined
    ? L.calibrationRows.default
    : integerOption('options.lowRank.calibrationRows', o['calibrationRows'], L.calibrationRows);
  return { keys, values, calibrationRows };
}

/** The flat native fields of a resolved lowRank option. */
export function nativeLowRank(c: LowRankConfig | null): { lowRankKeys: number; lowRankValues: number; calibrationRows: number } {
  return c ? { lowRankKeys: c.keys, lowRankValues: c.values, calibrationRows: c.calibrationRows }
    : { lowRankKeys: 0, lowRankValues: 0, calibrationRows: LOW_RANK_OPTIONS.calibrationRows.default };
}
