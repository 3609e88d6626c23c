// Float64 references of low-rank storage: orthonormal bases, projection c = B^T x, lift
// x^ = B c, and low-rank-plus-noise streams whose exact projection error is known.
import { randn, type Rng } from '../reference/random';

/** A [D][r] basis with orthonormal columns (modified Gram-Schmidt of Gaussian columns, twice). */
export function orthonormal(rng: Rng, D: number, r: number): Float32Array {
  const g = Float64Array.from(randn(rng, D * r));
  for (let pass = 0; pass < 2; pass++) {
    for (let j = 0; j < r; j++) {
      for (let i = 0; i < j; i++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += g[d * r + i]! * g[d * r + j]!;
        for (let d = 0; d < D; d++) g[d * r + j] = g[d * r + j]! - dot * g[d * r + i]!;
      }
      let norm = 0;
      for (let d = 0; d < D; d++) norm += g[d * r + j]! ** 2;
      norm = Math.sqrt(norm);
      for (let d = 0; d < D; d++) g[d * r + j] = g[d * r + j]! / norm;
    }
  }
  return Float32Array.from(g);
}

/** c[t][j] = sum_d x[t][d] B[d][j] in float64. */
export function project(x: ArrayLike<number>, B: ArrayLike<number>, D: number, r: number): Float64Array {
  const T = x.length / D;
  const c = new Float64Array(T * r);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < r; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += x[t * D + d]! * B[d * r + j]!;
      c[t * r + j] = s;
    }
  }
  return c;
}

/** x[t][d] = sum_j c[t][j] B[d][j] in float64. */
export function lift(c: ArrayLike<number>, B: ArrayLike<number>, D: number, r: number): Float64Array {
  const T = c.length / r;
  const x = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let d = 0; d < D; d++) {
      let s = 0;
      for (let j = 0; j < r; j++) s += c[t * r + j]! * B[d * r + j]!;
      x[t * D + d] = s;
    }
  }
  return x;
}

export function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * T rows x = U z + n of D floats: U a random rank-r orthonormal basis, z with spread scales
 * (3 down to 1), n of size `noise` orthogonal to U and, over each run of rows in [0, split)
 * and [split, T), sample-orthogonal to the signal coefficients, so that the second-moment
 * matrix of any such run is U Z^T Z U^T + N^T N exactly and its leading r-dimensional
 * eigenspace is span(U). The error of projecting onto that space is then exactly n:
 * returned as noise = (I - U U^T) x, computed from the f32 rows.
 */
export function lowRankPlusNoise(rng: Rng, T: number, D: number, r: number, noise: number, split = 64): { rows: Float32Array; noise: Float64Array } {
  const U = Float64Array.from(orthonormal(rng, D, r));
  const z = Float64Array.from(randn(rng, T * r));
  for (let t = 0; t < T; t++) for (let j = 0; j < r; j++) z[t * r + j] = z[t * r + j]! * (3 - (2 * j) / Math.max(1, r - 1));
  const n = Float64Array.from(randn(rng, T * D, noise));
  // n <- (I - U U^T) n per row
  const outside = (v: Float64Array, t: number) => {
    for (let j = 0; j < r; j++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += v[t * D + d]! * U[d * r + j]!;
      for (let d = 0; d < D; d++) v[t * D + d] = v[t * D + d]! - dot * U[d * r + j]!;
    }
  };
  for (let t = 0; t < T; t++) outside(n, t);
  // within each run, remove from every noise column its component along the columns of z
  // (Gram-Schmidt on the run's z columns); row-wise orthogonality to U is kept (linear in rows)
  for (const [a, b] of [[0, Math.min(split, T)], [Math.min(split, T), T]] as const) {
    const q: Float64Array[] = [];
    for (let j = 0; j < r; j++) {
      const col = new Float64Array(b - a);
      for (let t = a; t < b; t++) col[t - a] = z[t * r + j]!;
      for (const p of q) {
        let dot = 0;
        for (let i = 0; i < col.length; i++) dot += col[i]! * p[i]!;
        for (let i = 0; i < col.length; i++) col[i] = col[i]! - dot * p[i]!;
      }
      let norm = 0;
      for (let i = 0; i < col.length; i++) norm += col[i]! ** 2;
      if (norm > 1e-20) q.push(col.map((x) => x / Math.sqrt(norm)));
    }
    for (let d = 0; d < D; d++) {
      for (const p of q) {
        let dot = 0;
        for (let t = a; t < b; t++) dot += n[t * D + d]! * p[t - a]!;
        for (let t = a; t < b; t++) n[t * D + d] = n[t * D + d]! - dot * p[t - a]!;
      }
    }
  }
  const rows = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let d = 0; d < D; d++) {
      let s = n[t * D + d]!;
      for (let j = 0; j < r; j++) s += U[d * r + j]! * z[t * r + j]!;
      rows[t * D + d] = s;
    }
  }
  const exact = Float64Array.from(rows);
  for (let t = 0; t < T; t++) outside(exact, t);
  return { rows, noise: exact };
}

/** CRC-32 (IEEE, reflected), as the export format uses. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** All eigenvalues of a symmetric n x n matrix (row-major), descending: cyclic Jacobi in float64. */
export function symmetricEigenvalues(m: Float64Array, n: number): number[] {
  const a = Float64Array.from(m);
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q]! ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        const theta = (a[q * n + q]! - a[p * n + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!, akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!, aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  return Array.from({ length: n }, (_, i) => a[i * n + i]!).sort((x, y) => y - x);
}
