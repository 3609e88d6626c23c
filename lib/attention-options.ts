// Checks of the attention options shared by Sequence.attention and KVCache.attentionBatch.
import { invalidArgument, shapeMismatch } from './errors';
import { ATTENTION_FLAGS, POSITIONS, PRECISION, SPARSE_OPTIONS } from './generated/schema';
import type { SparseOptions } from './types';
import { enumOption, float32Array, integerOption, knownKeys, optionsObject } from './validate';

const ATTENTION_OPTIONS = ['out', 'lse', 'recordQueries', 'accumulateScores', 'positions', 'sparse', 'precision'] as const;
const BOOLEAN_FLAGS = ['accumulateScores', 'recordQueries'] as const;

/** The `sparse` option resolved (defaults filled in), or null for dense attention. */
export function sparseOption(value: unknown, keySummaries: boolean): Required<SparseOptions> | null {
  if (value === undefined) return null;
  const o = optionsObject('options.sparse', value);
  knownKeys('options.sparse', o, ['tokens', 'sinks', 'recent']);
  const L = SPARSE_OPTIONS;
  if (!keySummaries) throw invalidArgument('options.sparse', 'used only on a cache created with keySummaries: true', 'a cache without key summaries');
  return {
    tokens: integerOption('options.sparse.tokens', o['tokens'], L.tokens),
    sinks: o['sinks'] === undefined ? L.sinks.default : integerOption('options.sparse.sinks', o['sinks'], L.sinks),
    recent: o['recent'] === undefined ? L.recent.default : integerOption('options.sparse.recent', o['recent'], L.recent),
  };
}

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
  if (o['precision'] !== undefined) {
    const precision = enumOption('options.precision', o['precision'], PRECISION);
    flags |= precision === 'fast' ? ATTENTION_FLAGS.precisionFast : ATTENTION_FLAGS.precisionExact;
  }
  const positions = o['positions'] === undefined ? undefined : enumOption('options.positions', o['positions'], POSITIONS);
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
