// Comparison helpers: max abs error, normwise relative error ‖a−b‖/‖b‖, tolerance checks that
// name the worst element, and bit-exact comparison for data movement (stored rows, export/import).
import { expect } from 'vitest';
import { maxAbsError, relError } from './errors';

export { maxAbsError, relError };

type Num = ArrayLike<number>;

export interface Tolerance {
  abs?: number; // max |a_i - b_i|
  rel?: number; // ‖a − b‖ / ‖b‖
}

/** Assert lengths match, nothing is NaN, and the given bounds hold; the message names the worst index. */
export function expectClose(actual: Num, expected: Num, tol: Tolerance, label: string): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  const worst = maxAbsError(actual, expected);
  const rel = relError(actual, expected);
  const at = worst.index >= 0
    ? `worst index ${worst.index}: actual ${actual[worst.index]}, expected ${expected[worst.index]}`
    : 'no difference';
  const msg = `${label}: max abs ${worst.value.toExponential(3)}, rel ${rel.toExponential(3)} ` +
    `(bounds abs ${tol.abs ?? '-'}, rel ${tol.rel ?? '-'}); ${at}`;
  for (let i = 0; i < actual.length; i++) {
    if (Number.isNaN(actual[i]) !== Number.isNaN(expected[i])) {
      expect.fail(`${label}: NaN mismatch at index ${i}: actual ${actual[i]}, expected ${expected[i]}`);
    }
  }
  if (tol.abs !== undefined && !(worst.value <= tol.abs)) expect.fail(msg);
  if (tol.rel !== undefined && !(rel <= tol.rel)) expect.fail(msg);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function bitsOf(x: number): number {
  f32[0] = x;
  return u32[0]!;
}

/** Assert two float32 arrays hold identical bits (distinguishes -0 and +0). */
export function expectBitExact(actual: Float32Array, expected: Float32Array, label: string): void {
  expect(actual, `${label}: type`).toBeInstanceOf(Float32Array);
  expect(actual.length, `${label}: length`).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    const a = bitsOf(actual[i]!);
    const e = bitsOf(expected[i]!);
    if (a !== e) {
      let count = 0;
      for (let j = i; j < actual.length; j++) if (bitsOf(actual[j]!) !== bitsOf(expected[j]!)) count++;
      expect.fail(`${label}: first difference at index ${i}: actual ${actual[i]} (0x${a.toString(16)}), ` +
        `expected ${expected[i]} (0x${e.toString(16)}); ${count} of ${actual.length} differ`);
    }
  }
}

/** Assert equal integer arrays, naming the first difference. */
export function expectIntsEqual(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      expect.fail(`${label}: first difference at index ${i}: actual ${actual[i]}, expected ${expected[i]}`);
    }
  }
}
