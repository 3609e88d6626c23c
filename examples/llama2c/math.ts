// Dense kernels of the llama2.c forward pass on Float32Array, written for V8:
// offsets instead of subarray views, register-blocked or 4-way unrolled sums with
// independent accumulators (JS numbers are f64, so sums are accumulated in double),
// and no allocation inside any loop.

/** out[outOff..+n) = rmsnorm(x[xOff..+n)) * w[wOff..+n), eps as in llama2.c */
export function rmsnorm(
  out: Float32Array, outOff: number,
  x: Float32Array, xOff: number,
  w: Float32Array, wOff: number,
  n: number, eps = 1e-5,
): void {
  let ss = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xOff + i]!;
    ss += v * v;
  }
  const scale = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) out[outOff + i] = w[wOff + i]! * (scale * x[xOff + i]!);
}

/** sum_i a[aOff+i] * b[bOff+i], i < n */
export function dot(a: Float32Array, aOff: number, b: Float32Array, bOff: number, n: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    s0 += a[aOff + i]! * b[bOff + i]!;
    s1 += a[aOff + i + 1]! * b[bOff + i + 1]!;
    s2 += a[aOff + i + 2]! * b[bOff + i + 2]!;
    s3 += a[aOff + i + 3]! * b[bOff + i + 3]!;
  }
  for (; i < n; i++) s0 += a[aOff + i]! * b[bOff + i]!;
  return s0 + s1 + (s2 + s3);
}

/**
 * out[t, o] = sum_i W[wOff + o*n + i] * x[t, i] for t < T, o < d.
 * W: [d, n] row-major (llama2.c [out, in]); x: [T, n]; out: [T, d]. out must not alias x.
 */
export function matmul(
  out: Float32Array, x: Float32Array, w: Float32Array, wOff: number,
  n: number, d: number, T = 1,
): void {
  gemm(out, x, w, wOff, n, d, T, false);
}

/** like matmul, but adds into out (residual connections): out[t, o] += (W x[t])[o] */
export function matmulAdd(
  out: Float32Array, x: Float32Array, w: Float32Array, wOff: number,
  n: number, d: number, T = 1,
): void {
  gemm(out, x, w, wOff, n, d, T, true);
}

// Register-blocked: 2 tokens x 4 weight rows per pass over i, so each loaded weight is
// used twice and each loaded x value four times (about 2x the speed of one dot product
// at a time in V8). Tails fall back to 1 token and to single rows.
function gemm(
  out: Float32Array, x: Float32Array, w: Float32Array, wOff: number,
  n: number, d: number, T: number, add: boolean,
): void {
  let t = 0;
  for (; t + 1 < T; t += 2) {
    const x0 = t * n;
    const x1 = x0 + n;
    const o0 = t * d;
    const o1 = o0 + d;
    let o = 0;
    for (; o + 3 < d; o += 4) {
      const r0 = wOff + o * n, r1 = r0 + n, r2 = r1 + n, r3 = r2 + n;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
      for (let i = 0; i < n; i++) {
        const u = x[x0 + i]!;
        const v = x[x1 + i]!;
        const w0 = w[r0 + i]!, w1 = w[r1 + i]!, w2 = w[r2 + i]!, w3 = w[r3 + i]!;
        a0 += w0 * u; a1 += w1 * u; a2 += w2 * u; a3 += w3 * u;
        b0 += w0 * v; b1 += w1 * v; b2 += w2 * v; b3 += w3 * v;
      }
      if (add) {
        a0 += out[o0 + o]!; a1 += out[o0 + o + 1]!; a2 += out[o0 + o + 2]!; a3 += out[o0 + o + 3]!;
        b0 += out[o1 + o]!; b1 += out[o1 + o + 1]!; b2 += out[o1 + o + 2]!; b3 += out[o1 + o + 3]!;
      }
      out[o0 + o] = a0; out[o0 + o + 1] = a1; out[o0 + o + 2] = a2; out[o0 + o + 3] = a3;
      out[o1 + o] = b0; out[o1 + o + 1] = b1; out[o1 + o + 2] = b2; out[o1 + o + 3] = b3;
    }
    for (; o < d; o++) {
      const r = wOff + o * n;
      let a = 0, b = 0;
      for (let i = 0; i < n; i++) {
        const wi = w[r + i]!;
        a += wi * x[x0 + i]!;
        b += wi * x[x1 + i]!;
      }
      out[o0 + o] = add ? out[o0 + o]! + a : a;
      out[o1 + o] = add ? out[o1 + o]! + b : b;
    }
  }
  for (; t < T; t++) {
    const x0 = t * n;
    const o0 = t * d;
    let o = 0;
    for (; o + 3 < d; o += 4) {
      const r0 = wOff + o * n, r1 = r0 + n, r2 = r1 + n, r3 = r2 + n;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let i = 0; i < n; i++) {
        const u = x[x0 + i]!;
        a0 += w[r0 + i]! * u; a1 += w[r1 + i]! * u; a2 += w[r2 + i]! * u; a3 += w[r3 + i]! * u;
      }
      if (add) {
        a0 += out[o0 + o]!; a1 += out[o0 + o + 1]!; a2 += out[o0 + o + 2]!; a3 += out[o0 + o + 3]!;
      }
      out[o0 + o] = a0; out[o0 + o + 1] = a1; out[o0 + o + 2] = a2; out[o0 + o + 3] = a3;
    }
    for (; o < d; o++) {
      const a = dot(w, wOff + o * n, x, x0, n);
      out[o0 + o] = add ? out[o0 + o]! + a : a;
    }
  }
}

/** silu(x) = x * sigmoid(x) */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** SwiGLU gate in place: h1[i] = silu(h1[i]) * h3[i], i < n */
export function swiglu(h1: Float32Array, h3: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const v = h1[i]!;
    h1[i] = (v / (1 + Math.exp(-v))) * h3[i]!;
  }
}

/** in-place softmax of x[off..+n), max-subtracted */
export function softmax(x: Float32Array | Float64Array, off: number, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i]! > max) max = x[off + i]!;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[off + i]! - max);
    x[off + i] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let i = 0; i < n; i++) x[off + i] = x[off + i]! * inv;
}

/** log(sum exp(x[off..+n))) in double */
export function logSumExp(x: Float32Array, off: number, n: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i]! > max) max = x[off + i]!;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[off + i]! - max);
  return max + Math.log(sum);
}

/** index of the largest of x[off..+n) (first on ties) */
export function argmax(x: Float32Array, off = 0, n = x.length - off): number {
  let best = 0;
  let bestV = x[off]!;
  for (let i = 1; i < n; i++) {
    if (x[off + i]! > bestV) {
      bestV = x[off + i]!;
      best = i;
    }
  }
  return best;
}

/**
 * RoPE cos/sin tables: pair j of a head at position p is rotated by
 * p / 10000^(2j/headDim). Grown on demand, so any position works.
 */
export class RopeTable {
  readonly half: number;
  cos: Float64Array = new Float64Array(0);
  sin: Float64Array = new Float64Array(0);
  private positions = 0;
  private readonly invFreq: Float64Array;

  constructor(readonly headDim: number, readonly theta = 10000) {
    this.half = headDim / 2;
    this.invFreq = new Float64Array(this.half);
    for (let j = 0; j < this.half; j++) this.invFreq[j] = 1 / Math.pow(theta, (2 * j) / headDim);
  }

  /** make positions [0, n) available */
  ensure(n: number): void {
    if (n <= this.positions) return;
    const cap = Math.max(n, this.positions * 2, 64);
    const cos = new Float64Array(cap * this.half);
    const sin = new Float64Array(cap * this.half);
    cos.set(this.cos);
    sin.set(this.sin);
    for (let p = this.positions; p < cap; p++) {
      for (let j = 0; j < this.half; j++) {
        const a = p * this.invFreq[j]!;
        cos[p * this.half + j] = Math.cos(a);
        sin[p * this.half + j] = Math.sin(a);
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.positions = cap;
  }
}

/**
 * Rotate, in place, the interleaved pairs (v[2j], v[2j+1]) of each of `heads` heads
 * of v[off..+heads*headDim) for position `pos`. Call table.ensure(pos + 1) first.
 */
export function rope(v: Float32Array, off: number, heads: number, table: RopeTable, pos: number): void {
  const half = table.half;
  const { cos, sin } = table;
  const tOff = pos * half;
  for (let h = 0; h < heads; h++) {
    const base = off + h * half * 2;
    for (let j = 0; j < half; j++) {
      const c = cos[tOff + j]!;
      const s = sin[tOff + j]!;
      const i = base + 2 * j;
      const v0 = v[i]!;
      const v1 = v[i + 1]!;
      v[i] = v0 * c - v1 * s;
      v[i + 1] = v0 * s + v1 * c;
    }
  }
}
