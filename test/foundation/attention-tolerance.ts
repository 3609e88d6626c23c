// Tolerances of attention against the float64 reference, and the check that they are tight.
//
// The reference runs on the rows as stored (f16/bf16 rounding predicted by the formats reference),
// so the storage format adds no error: what remains is the kernel's float32 arithmetic
// (dot products, exp, the online-softmax sums). With random N(0,1) rows, output ≈ Σ p_t v_t has norm
// ~ |v| / sqrt(T) while float32 rounding of the running sums is ~ eps·|v|, so the normwise relative
// error grows like eps·sqrt(T) (eps = 2^-24 ≈ 6e-8): ≤ 2e-6 up to ~500 rows, then 2e-6·sqrt(T/512)
// (≈ 6e-6 at 4096 rows). The same bounds hold for every plain storage format because rounded rows
// are exact float32 values.
//
// Tight enough: dropping one row out of T changes the output by ~ 1/sqrt(T) relative (≈ 0.016 at
// 4096 rows, far above the bound); checkTight() asserts this for every case.
import { expect } from 'vitest';
import { type StreamRows, attentionReference, withoutRow } from '../reference/attention-reference';
import { relError } from '../reference/compare';

export function outputTol(T: number): { rel: number } {
  return { rel: 2e-6 * Math.max(1, Math.sqrt(T / 512)) };
}

/** lse is log Σ exp(logit), of size ~ log T + O(1): absolute float32 error ~ a few ulp of it. */
export const LSE_TOL = { abs: 2e-5 };

/**
 * Assert that removing a middle row (or shifting the visible window by one) of every stream
 * changes the reference output by far more than the tolerance, so such a kernel bug would fail.
 */
export function checkTight(headDim: number, queryHeads: number, streams: StreamRows[], queries: Float32Array,
  full: Float64Array): void {
  const T = streams[0]!.positions.length;
  const tq = queries.length / (queryHeads * headDim);
  const qpos = streams.map((s) => Array.from({ length: tq }, (_, i) => s.positions[s.positions.length - tq + i]!));
  const dropped = attentionReference({
    headDim, queryHeads, queries, queryPositions: qpos,
    streams: streams.map((s) => (s.positions.length > 1 ? withoutRow(s, Math.floor(s.positions.length / 2), headDim) : s)),
  });
  if (T > 1) {
    expect(relError(dropped.out, full), 'a missing row must exceed the tolerance 10×').toBeGreaterThan(10 * outputTol(T).rel);
  }
}
