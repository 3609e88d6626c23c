// Argument checks shared by the public classes. Each throws a KVCacheError naming the
// argument; native code checks again, cheaply, so a mistake here cannot crash anything.
import { invalidArgument, shapeMismatch } from './errors';

export function isInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value);
}

export function integerIn(name: string, value: unknown, min: number, max: number): number {
  if (!isInteger(value) || value < min || value > max) {
    throw invalidArgument(name, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

/** A layer or head index: an integer in [0, count). */
export function indexBelow(name: string, value: unknown, count: number): number {
  if (!isInteger(value) || value < 0 || value >= count) {
    throw invalidArgument(name, `an integer in [0, ${count})`, value);
  }
  return value;
}

export function rowArray(name: string, value: unknown): Float32Array | Uint16Array {
  if (value instanceof Float32Array || value instanceof Uint16Array) return value;
  throw invalidArgument(name, 'a Float32Array or a Uint16Array holding f16 bits', value);
}

export function float32Array(name: string, value: unknown): Float32Array {
  if (value instanceof Float32Array) return value;
  throw invalidArgument(name, 'a Float32Array', value);
}

/** T for a token-major [T, heads, headDim] array; SHAPE_MISMATCH when not whole. */
export function tokenCount(name: string, length: number, rowElements: number, shape: string): number {
  const tokens = length / rowElements;
  if (length === 0 || !Number.isInteger(tokens)) {
    throw shapeMismatch(`${name} must hold T × ${shape} = T × ${rowElements} elements with T ≥ 1, got ${length}`);
  }
  return tokens;
}

/** Rejects option names the function does not know (catches misspellings). */
export function knownKeys(name: string, options: object, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw invalidArgument(`${name}.${key}`, `one of the known options (${known.join(', ')})`, 'an unknown option');
    }
  }
}

export function optionsObject(name: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalidArgument(name, 'an object', value);
  return value as Record<string, unknown>;
}
