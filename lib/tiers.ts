// The tiers option of KVCache (precision tiers, cpp/core/tiers): resolution and checks with
// the limits of schema/options.json (TIERS_OPTIONS); the native layer checks the same rules.
import { invalidArgument } from './errors';
import { TIERS_OPTIONS } from './generated/schema';
import type { Storage, TierConfig } from './types';
import { enumOption, integerOption, knownKeys, optionsObject } from './validate';

/** Bytes of one encoded row (kvc/formats.h) without the 4-byte padding: enough to order tiers. */
function rowWeight(s: Storage): number {
  return { f32: 32, f16: 16, bf16: 16, int8: 9, int4: 5 }[s];
}

/** The tiers option, resolved (null when not given); a KVCacheError names the first bad field. */
export function resolveTiers(value: unknown): readonly TierConfig[] | null {
  if (value === undefined || value === null) return null;
  const T = TIERS_OPTIONS;
  if (!Array.isArray(value)) throw invalidArgument('options.tiers', 'an array of { rows, keys, values }', value);
  if (value.length < T.count.min || value.length > T.count.max) {
    throw invalidArgument('options.tiers', `${T.count.min} to ${T.count.max} tiers`, value.length);
  }
  const out: TierConfig[] = [];
  value.forEach((item: unknown, k: number) => {
    const name = `options.tiers[${k}]`;
    const t = optionsObject(name, item);
    knownKeys(name, t, ['rows', 'keys', 'values']);
    const last = k === value.length - 1;
    let rows: number | null = null;
    if (last) {
      if (t['rows'] !== undefined) throw invalidArgument(`${name}.rows`, 'omitted: the last tier keeps every older row', t['rows']);
    } else {
      if (t['rows'] === undefined) throw invalidArgument(`${name}.rows`, 'an integer >= 1 (every tier but the last has rows)', undefined);
      rows = integerOption(`${name}.rows`, t['rows'], T.rows);
    }
    if (t['keys'] === undefined) throw invalidArgument(`${name}.keys`, 'a storage format', undefined);
    if (t['values'] === undefined) throw invalidArgument(`${name}.values`, 'a storage format', undefined);
    const keys = enumOption(`${name}.keys`, t['keys'], T.keys.names) as Storage;
    const values = enumOption(`${name}.values`, t['values'], T.values.names) as Storage;
    const above = out[k - 1];
    if (above && rowWeight(keys) + rowWeight(values) > rowWeight(above.keys) + rowWeight(above.values)) {
      throw invalidArgument(name, `formats using no more bytes per row than tiers[${k - 1}] (${above.keys}/${above.values})`, `${keys}/${values}`);
    }
    out.push(Object.freeze({ rows, keys, values }));
  });
  return Object.freeze(out);
}
