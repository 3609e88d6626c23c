// RoPE in float64 as the model defines it, written out, and gapped position lists: shared by
// the tests of the cache's RoPE (plain and low-rank streams) as the independent reference.
import type { Rng } from './random';

export interface RopeSpec {
  theta: number;
  dims: number;
  style: 'interleaved' | 'half';
}

/** RoPE of one head vector at `position`, in float64 (the model's definition, written out). */
export function ropeF64(x: ArrayLike<number>, off: number, D: number, r: RopeSpec, position: number): Float64Array {
  const y = Float64Array.from({ length: D }, (_, d) => x[off + d]!);
  const h = r.dims / 2;
  for (let i = 0; i < h; i++) {
    const a = position * Math.pow(r.theta, (-2 * i) / r.dims);
    const [j, k] = r.style === 'interleaved' ? [2 * i, 2 * i + 1] : [i, i + h];
    const x0 = x[off + j]!, x1 = x[off + k]!;
    y[j] = x0 * Math.cos(a) - x1 * Math.sin(a);
    y[k] = x0 * Math.sin(a) + x1 * Math.cos(a);
  }
  return y;
}

/** Positions with gaps (1..7) starting at `start`. */
export function gappedPositions(rng: Rng, start: number, n: number): Int32Array {
  const p = new Int32Array(n);
  let at = start;
  for (let i = 0; i < n; i++) {
    p[i] = at;
    at += 1 + rng.int(0, 6);
  }
  return p;
}
