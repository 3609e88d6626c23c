// Seeded synthetic key/value/query streams shaped like a real LLM's attention inputs, for
// the quality tests and the benchmarks (test/quantization, bench/*). Real Llama-family keys
// after RoPE have a few channels of much larger magnitude than the rest, the first token is
// an attention sink that most heads attend to, and attention is mostly local; values have
// no such outliers. Each property is a parameter below, with defaults chosen to resemble
// the statistics reported for Llama-2/3 keys (KIVI, KVQuant, QuaRot):
//
//   outlierChannels  = 4      channels per kv head whose key magnitude is multiplied by
//   outlierScale     = 12     this factor (each head draws its own channels)
//   channelSpread    = 0.5    log-normal spread of the other channels' key scales
//   sinkStrength     = 4      the position-0 key is `sinkStrength` × a typical key norm along
//                             the head's sink direction (in the whitened space key / scale)
//   sinkLogit        = 9      every query's component along the sink direction gives the sink
//                             row this logit (q·k/sqrt(D)), so it takes a large share of mass
//   localLogit       = 8      each query leans toward the mean of the last `localWindow` keys
//   localWindow      = 16     (normalized), giving recent rows logits up to about localLogit
//   noiseLogit       = 1      a random query direction adds logits of this standard deviation
//   temporalCorr     = 0.8    AR(1) correlation of consecutive keys (and of values), as in
//                             real streams where neighbouring tokens look alike
//   valueScale       = 1      values: N(0, valueScale²) with the same AR(1) correlation,
//                             no outlier channels
//
// Measured with the defaults (T = 2048, head_dim 128, decode queries): the sink row takes
// 30-55% of each query's attention mass, the last 16 rows 15-50%, the other ~2000 rows ~20%.
//
// Everything is a pure function of (shape, seed, parameters): the same call gives the same
// bits on every platform (mulberry32 + Box-Muller in float64, rounded to float32 once).
// Layouts are token-major, as KVCache.append and attention take them:
//   keys, values  Float32Array [T, kvHeads, headDim]
//   queries       Float32Array [Tq, queryHeads, headDim]; query head h uses kv head
//                 floor(h / (queryHeads / kvHeads)) and sits at the positions of the last Tq rows.

import { Mulberry32 } from '../../examples/shared/mulberry32';

export interface StreamShape {
  tokens: number;
  kvHeads: number;
  headDim: number;
  queryHeads?: number; // default kvHeads
}

export interface StreamParams {
  outlierChannels: number;
  outlierScale: number;
  channelSpread: number;
  sinkStrength: number;
  sinkLogit: number;
  localLogit: number;
  localWindow: number;
  noiseLogit: number;
  temporalCorr: number;
  valueScale: number;
}

export const DEFAULT_STREAM_PARAMS: Readonly<StreamParams> = Object.freeze({
  outlierChannels: 4,
  outlierScale: 12,
  channelSpread: 0.5,
  sinkStrength: 4,
  sinkLogit: 9,
  localLogit: 8,
  localWindow: 16,
  noiseLogit: 1,
  temporalCorr: 0.8,
  valueScale: 1,
});

/** mulberry32 + Box–Muller: small, seeded, identical everywhere. */
export class StreamRng {
  private readonly bits: Mulberry32;
  private spare: number | null = null;

  constructor(seed: number) {
    this.bits = new Mulberry32(seed);
  }

  u32(): number {
    return this.bits.u32();
  }

  /** Uniform in (0, 1). */
  uniform(): number {
    return (this.u32() + 0.5) / 4294967296;
  }

  randn(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const a = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(a);
    return r * Math.cos(a);
  }
}

/** Per-kv-head structure shared by keys and queries: channel scales and the sink direction. */
export interface HeadStructure {
  keyScale: Float64Array; // [D]
  keyRms: number; // rms of keyScale: a typical key has norm keyRms * sqrt(D)
  sinkDir: Float64Array; // [D], unit norm in the whitened space (key / channel scale)
}

function headStructures(rng: StreamRng, kvHeads: number, D: number, p: StreamParams): HeadStructure[] {
  return Array.from({ length: kvHeads }, () => {
    const keyScale = new Float64Array(D);
    for (let d = 0; d < D; d++) keyScale[d] = Math.exp(p.channelSpread * rng.randn());
    // Distinct outlier channels per head (partial Fisher-Yates).
    const order = Array.from({ length: D }, (_, i) => i);
    for (let i = 0; i < Math.min(p.outlierChannels, D); i++) {
      const j = i + (rng.u32() % (D - i));
      [order[i], order[j]] = [order[j]!, order[i]!];
      const c = order[i]!;
      keyScale[c] = keyScale[c]! * p.outlierScale;
    }
    const sinkDir = new Float64Array(D);
    let n = 0;
    for (let d = 0; d < D; d++) {
      sinkDir[d] = rng.randn();
      n += sinkDir[d]! ** 2;
    }
    n = Math.sqrt(n);
    for (let d = 0; d < D; d++) sinkDir[d]! /= n;
    let ms = 0;
    for (let d = 0; d < D; d++) ms += keyScale[d]! ** 2;
    return { keyScale, keyRms: Math.sqrt(ms / D), sinkDir };
  });
}

export interface SyntheticStreams {
  shape: Required<StreamShape>;
  params: StreamParams;
  keys: Float32Array; // [T, kvHeads, D]
  values: Float32Array; // [T, kvHeads, D]
  heads: HeadStructure[]; // [kvHeads]: the channel scales (outliers) and sink directions drawn
}

/**
 * Keys and values of T tokens. Row 0 of every head is the attention sink; keys follow an
 * AR(1) process per channel scaled by the head's channel scales (with outliers).
 */
export function syntheticKV(shape: StreamShape, seed: number, overrides: Partial<StreamParams> = {}): SyntheticStreams {
  const p: StreamParams = { ...DEFAULT_STREAM_PARAMS, ...overrides };
  const { tokens: T, kvHeads: H, headDim: D } = shape;
  const queryHeads = shape.queryHeads ?? H;
  const rng = new StreamRng(seed ^ 0x5eed0001);
  const heads = headStructures(rng, H, D, p);
  const keys = new Float32Array(T * H * D);
  const values = new Float32Array(T * H * D);
  const rho = p.temporalCorr;
  const innovation = Math.sqrt(1 - rho * rho);
  const kState = new Float64Array(H * D);
  const vState = new Float64Array(H * D);
  for (let i = 0; i < H * D; i++) {
    kState[i] = rng.randn();
    vState[i] = rng.randn();
  }
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const hs = heads[h]!;
      const base = (t * H + h) * D;
      for (let d = 0; d < D; d++) {
        const i = h * D + d;
        kState[i] = rho * kState[i]! + innovation * rng.randn();
        vState[i] = rho * vState[i]! + innovation * rng.randn();
        const z = t === 0 ? p.sinkStrength * Math.sqrt(D) * hs.sinkDir[d]! : kState[i]!;
        keys[base + d] = z * hs.keyScale[d]!;
        values[base + d] = vState[i]! * p.valueScale;
      }
    }
  }
  return { shape: { tokens: T, kvHeads: H, headDim: D, queryHeads }, params: p, keys, values, heads };
}

/**
 * Queries for the last `tq` positions of `streams` (decode: tq = 1): each query leans toward
 * the mean of the keys in its local window and toward the head's sink, plus noise, so its
 * attention is mostly local with a strong sink.
 */
export function syntheticQueries(streams: SyntheticStreams, tq: number, seed: number): Float32Array {
  const { tokens: T, kvHeads: H, headDim: D, queryHeads: QH } = streams.shape;
  const p = streams.params;
  if (!Number.isInteger(tq) || tq < 1 || tq > T) throw new RangeError(`tq ${tq} must be in [1, ${T}]`);
  if (QH % H !== 0) throw new RangeError(`queryHeads ${QH} is not a multiple of kvHeads ${H}`);
  const rng = new StreamRng(seed ^ 0x5eed0002);
  const heads = streams.heads;
  const group = QH / H;
  const out = new Float32Array(tq * QH * D);
  const local = new Float64Array(D);
  const noise = new Float64Array(D);
  for (let i = 0; i < tq; i++) {
    const pos = T - tq + i;
    for (let qh = 0; qh < QH; qh++) {
      const h = Math.floor(qh / group);
      const hs = heads[h]!;
      local.fill(0);
      const from = Math.max(1, pos - p.localWindow + 1);
      for (let t = from; t <= pos; t++) {
        const base = (t * H + h) * D;
        // whitened (divided by the channel scales), so the outlier channels do not decide locality
        for (let d = 0; d < D; d++) local[d] = local[d]! + streams.keys[base + d]! / hs.keyScale[d]!;
      }
      // Local and noise directions, orthogonal to the sink direction so that only the sink
      // part decides the sink's logit.
      let ls = 0;
      let ns = 0;
      for (let d = 0; d < D; d++) {
        noise[d] = rng.randn();
        ls += local[d]! * hs.sinkDir[d]!;
        ns += noise[d]! * hs.sinkDir[d]!;
      }
      let ln = 0;
      let nn = 0;
      for (let d = 0; d < D; d++) {
        local[d] = local[d]! - ls * hs.sinkDir[d]!;
        noise[d] = noise[d]! - ns * hs.sinkDir[d]!;
        ln += local[d]! ** 2;
        nn += noise[d]! ** 2;
      }
      ln = Math.sqrt(ln) || 1;
      nn = Math.sqrt(nn) || 1;
      // Everything lives in the whitened space z = k / scale: q_d = w_d / scale_d, so
      // q·k / sqrt(D) = w·z / sqrt(D). The sink key is z_0 = sinkStrength sqrt(D) u_sink, so the
      // weight sinkLogit / sinkStrength on u_sink gives it logit sinkLogit; a recent key with
      // cosine c to the window mean gets about c · localLogit; the noise part adds N(0, noiseLogit²).
      const a = p.sinkLogit / p.sinkStrength;
      const cl = p.localLogit;
      const cn = p.noiseLogit * Math.sqrt(D);
      const base = (i * QH + qh) * D;
      for (let d = 0; d < D; d++) {
        out[base + d] = (a * hs.sinkDir[d]! + cl * local[d]! / ln + cn * noise[d]! / nn) / hs.keyScale[d]!;
      }
    }
  }
  return out;
}

/** Gaussian rows N(0, 1) in the same layout (the unstructured baseline). */
export function gaussianKV(shape: StreamShape, seed: number): { keys: Float32Array; values: Float32Array } {
  const rng = new StreamRng(seed ^ 0x6a055);
  const n = shape.tokens * shape.kvHeads * shape.headDim;
  const keys = new Float32Array(n);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) keys[i] = rng.randn();
  for (let i = 0; i < n; i++) values[i] = rng.randn();
  return { keys, values };
}

export function gaussianQueries(tq: number, queryHeads: number, headDim: number, seed: number): Float32Array {
  const rng = new StreamRng(seed ^ 0x6a056);
  const q = new Float32Array(tq * queryHeads * headDim);
  for (let i = 0; i < q.length; i++) q[i] = rng.randn();
  return q;
}

/** Rows of kv head h of token-major [T, kvHeads, D] data, as [T, D]. */
export function headRows(data: Float32Array, kvHeads: number, headDim: number, h: number): Float32Array {
  const T = data.length / (kvHeads * headDim);
  const out = new Float32Array(T * headDim);
  for (let t = 0; t < T; t++) out.set(data.subarray((t * kvHeads + h) * headDim, (t * kvHeads + h + 1) * headDim), t * headDim);
  return out;
}
