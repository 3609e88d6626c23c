// Checks of the attention options shared by Sequence.attention and KVCache.attentionBatch.
import { invalidArgument, shapeMismatch } from './errors';
import { ATTENTION_FLAGS } from './generated/schema';
import { float32Array, knownKeys } from './validate';

const ATTENTION_OPTIONS = ['out', 'lse', 'recordQueries', 'accumulateScores', 'positions'] as const;
const BOOLEAN_FLAGS = ['accumulateScores', 'recordQueries'] as const;

/**
 * Checks the option names and flags; returns the native flags (bits of schema/options.json).
 * `rope`: the cache's rope option (positions: 'rank' needs it).
 */
export function attentionFlags(o: Record<string, unknown>, rope: unknown = null): number {
  knownKeys('options', o, ATTENTION_OPTIONS);
  let flags = 0;
  for (const name of BOOLEAN_FLAGS) {
    if (o[name] !== undefined && typeof o[name] !== 'boolean') throw invalidArgument(`options.${name}`, 'a boolean', o[name]);
    if (o[name] === true) flags |= ATTENTION_FLAGS[name];
  }
  const positions = o['positions'];
  if (positions !== undefined && positions !== 'stored' && positions !== 'rank') {
    throw invalidArgument('options.positions', "'stored' or 'rank'", positions);
  }
  if (positions === 'rank') {
    if (rope === null) throw invalidArgument('options.positions', "'stored' for a cache without the rope option", positions);
    flags |= ATTENTION_FLAGS.rankPositions;
  }
  return flags;
}

export function outputArray(value: unknown, length: number): Float32Array {
  if (value === undefined) return new Float32Array(length);
  const out = float32Array('options.out', value);
  if (out.length !== length) throw shapeMismatch(`options.out must hold ${length} elements, got ${out.length}`);
  return out;
}

export function lseArray(value: unknown, length: number): Float32Array | null {
  if (value === undefined) return null;
  const lse = float32Array('options.lse', value);
  if (lse.length !== length) throw shapeMismatch(`options.lse must hold ${length} elements, got ${lse.length}`);
  return lse;
}
