// Error measures with no test-runner dependency, so scripts and child processes use them too
// (compare.ts builds its assertions on them).
type Num = ArrayLike<number>;

/** Largest |a_i - b_i| and where; NaN counts as the worst (Infinity). Different lengths give Infinity. */
export function maxAbsError(a: Num, b: Num): { value: number; index: number } {
  if (a.length !== b.length) return { value: Infinity, index: -1 };
  let value = 0;
  let index = -1;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const e = Math.abs(a[i]! - b[i]!);
    if (!(e <= value)) { // NaN counts as the worst
      value = Number.isNaN(e) ? Infinity : e;
      index = i;
      if (Number.isNaN(e)) break;
    }
  }
  return { value, index };
}

/** ‖a − b‖₂ / ‖b‖₂ (b is the reference); NaN anywhere, or different lengths, give Infinity. */
export function relError(a: Num, b: Num): number {
  if (a.length !== b.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  if (Number.isNaN(num)) return Infinity;
  if (den === 0) return num === 0 ? 0 : Infinity;
  return Math.sqrt(num / den);
}
