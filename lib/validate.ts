// Argument checks shared by the public classes. Each throws a KVCacheError naming the
// argument; native code checks again, cheaply, so a mistake here cannot crash anything.
import { types } from 'node:util';

import { invalidArgument, shapeMismatch } from './errors';
import type { IntegerLimit, NumberLimit } from './generated/schema';

export function isInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value);
}

export function integerIn(name: string, value: unknown, min: number, max: number): number {
  if (!isInteger(value) || value < min || value > max) {
    throw invalidArgument(name, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

/** An integer option checked against its schema limits (lib/generated/schema.ts). */
export function integerOption(name: string, value: unknown, limit: IntegerLimit): number {
  return integerIn(name, value, limit.min, limit.max);
}

/** A number option checked against its schema limits. */
export function numberOption(name: string, value: unknown, limit: NumberLimit): number {
  const low = limit.minExclusive ? `(${limit.min}` : `[${limit.min}`;
  if (typeof value !== 'number' || !(limit.minExclusive ? value > limit.min : value >= limit.min) || !(value <= limit.max)) {
    throw invalidArgument(name, `a number in ${low}, ${limit.max === Number.MAX_VALUE ? 'finite' : limit.max}]`, value);
  }
  return value;
}

/** One of an enum's names (lib/generated/schema.ts); names cross to native code as they are. */
export function enumOption<T extends string>(name: string, value: unknown, names: readonly T[]): T {
  if (typeof value === 'string' && (names as readonly string[]).includes(value)) return value as T;
  throw invalidArgument(name, `one of ${names.map((s) => `'${s}'`).join(', ')}`, value);
}

/** A layer or head index: an integer in [0, count). */
export function indexBelow(name: string, value: unknown, count: number): number {
  if (!isInteger(value) || value < 0 || value >= count) {
    throw invalidArgument(name, `an integer in [0, ${count})`, value);
  }
  return value;
}

// Typed arrays are recognized by util.types, not instanceof: a Proxy of a typed array passes
// instanceof but native code cannot read it, and an array from another realm (vm context)
// fails instanceof but is a real typed array. Arrays on a SharedArrayBuffer are accepted.
export function rowArray(name: string, value: unknown): Float32Array | Uint16Array {
  if (types.isFloat32Array(value) || types.isUint16Array(value)) return value;
  throw invalidArgument(name, 'a Float32Array or a Uint16Array holding f16 bits', value);
}

export function float32Array(name: string, value: unknown): Float32Array {
  if (types.isFloat32Array(value)) return value;
  throw invalidArgument(name, 'a Float32Array', value);
}

export function isFloat32Array(value: unknown): value is Float32Array {
  return types.isFloat32Array(value);
}

export function isInt32Array(value: unknown): value is Int32Array {
  return types.isInt32Array(value);
}

export function isUint8Array(value: unknown): value is Uint8Array {
  return types.isUint8Array(value);
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
