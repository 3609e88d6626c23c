// Small generator of LLM-like attention streams for the eviction quality measurements:
// keys and queries after RoPE (interleaved pairs, theta 10000), an attention sink at
// position 0, local attention (a shared content vector whose RoPE'd dot product peaks at
// distance 0), topic retrieval (a Markov chain of topics; same-topic rows attract), a few
// outlier key channels in slowly rotating pairs, and heads that differ in how local they are.
// No vitest imports here: the benchmark loads this file outside the test runner.
import { Mulberry32 } from '../../examples/shared/mulberry32';


/** mulberry32 with Box–Muller normals (the same generator family as test/reference/random.ts). */
class Rng {
  private readonly bits: Mulberry32;
  constructor(seed: number) {
    this.bits = new Mulberry32(seed);
  }
  uniform(): number {
    return this.bits.u32() / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }
  randn(): number {
    let u = 0;
    while (u === 0) u = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
}

export interface SyntheticOptions {
  kvHeads: number;
  group: number; // query heads per kv head
  headDim: number; // even
  tokens: number; // prefix rows
  heldOut: number; // query tokens after the prefix
  seed: number;
  topics?: number; // default 16
  stay?: number; // topic persistence, default 0.97
  sharpness?: number; // query scale (inverse softmax temperature), default 2.5
  /**
   * Self-study queries: this many independent continuations of the held-out positions (their
   * own topic chains and noise, from a separate generator, so the other outputs do not change).
   */
  selfStudy?: number;
}

export interface SyntheticStreams {
  /** [tokens, kvHeads, headDim], token-major like Sequence.append */
  keys: Float32Array;
  values: Float32Array;
  /** [tokens + heldOut, kvHeads * group, headDim]: the prefix's queries, then the held-out ones */
  queries: Float32Array;
  /** [selfStudy × heldOut, kvHeads * group, headDim], when asked for */
  selfStudyQueries?: Float32Array;
}

function gaussian(rng: Rng, n: number, scale = 1): Float64Array {
  return Float64Array.from({ length: n }, () => rng.randn() * scale);
}

function rope(x: Float64Array, off: number, D: number, pos: number): void {
  for (let i = 0; i < D / 2; i++) {
    const theta = pos * Math.pow(10000, (-2 * i) / D);
    const c = Math.cos(theta), s = Math.sin(theta);
    const a = x[off + 2 * i]!, b = x[off + 2 * i + 1]!;
    x[off + 2 * i] = a * c - b * s;
    x[off + 2 * i + 1] = a * s + b * c;
  }
}

export function syntheticStreams(o: SyntheticOptions): SyntheticStreams {
  const rng = new Rng(o.seed);
  const D = o.headDim, H = o.kvHeads, G = o.group, QH = H * G;
  const M = o.topics ?? 16, stay = o.stay ?? 0.97, sharp = o.sharpness ?? 2.5;
  const total = o.tokens + o.heldOut;
  // Topic chain over all positions (held-out queries continue it).
  const topic = new Int32Array(total);
  for (let t = 1; t < total; t++) topic[t] = rng.uniform() < stay ? topic[t - 1]! : rng.int(0, M - 1);
  const keys = new Float64Array(o.tokens * H * D);
  const values = new Float64Array(o.tokens * H * D);
  const queries = new Float64Array(total * QH * D);
  const slow = Math.max(2, Math.floor(D / 8)); // the slowest-rotating dims (last pairs)
  // What a query needs of its head, kept for the self-study queries.
  const heads: { topicKeys: Float64Array[]; local: Float64Array; localness: number; sink: Float64Array; headTopic: number[] }[] = [];
  const query = (out: Float64Array, off: number, head: (typeof heads)[number], g: number, tp: number, pos: number, r: Rng): void => {
    for (let d = 0; d < D; d++) {
      out[off + d] = sharp * (head.headTopic[g]! * head.topicKeys[tp]![d]! + head.localness * head.local[d]! + 0.8 * head.sink[d]! + 0.3 * r.randn());
    }
    rope(out, off, D, pos);
  };
  for (let h = 0; h < H; h++) {
    const topicKeys = Array.from({ length: M }, () => gaussian(rng, D, 0.35));
    const topicValues = Array.from({ length: M }, () => gaussian(rng, D, 1));
    const local = gaussian(rng, D, 1);
    const localness = H === 1 ? 0.6 : 0.25 + (0.6 * h) / (H - 1); // heads from retrieval-like to local
    const sink = new Float64Array(D);
    for (let d = D - slow; d < D; d++) sink[d] = rng.randn();
    const outlier = new Float64Array(D);
    for (let d = D - slow; d < D - slow + 4; d++) outlier[d] = 4 * (rng.uniform() < 0.5 ? -1 : 1);
    for (let t = 0; t < o.tokens; t++) {
      const off = (t * H + h) * D;
      for (let d = 0; d < D; d++) {
        keys[off + d] = topicKeys[topic[t]!]![d]! + localness * local[d]! + 0.3 * rng.randn() + outlier[d]! + (t === 0 ? 3 * sink[d]! : 0);
        values[off + d] = 0.5 * topicValues[topic[t]!]![d]! + rng.randn();
      }
      rope(keys, off, D, t);
    }
    const head = { topicKeys, local, localness, sink, headTopic: [] as number[] };
    heads.push(head);
    for (let g = 0; g < G; g++) {
      head.headTopic.push(0.8 + 0.4 * rng.uniform());
      for (let t = 0; t < total; t++) query(queries, (t * QH + h * G + g) * D, head, g, topic[t]!, t, rng);
    }
  }
  const result: SyntheticStreams = { keys: Float32Array.from(keys), values: Float32Array.from(values), queries: Float32Array.from(queries) };
  if (o.selfStudy) {
    const r = new Rng(o.seed ^ 0x5e1f5e1f);
    const study = new Float64Array(o.selfStudy * o.heldOut * QH * D);
    for (let c = 0; c < o.selfStudy; c++) {
      let tp = topic[o.tokens - 1]!;
      for (let i = 0; i < o.heldOut; i++) {
        tp = r.uniform() < stay ? tp : r.int(0, M - 1);
        for (let h = 0; h < H; h++) {
          for (let g = 0; g < G; g++) query(study, ((c * o.heldOut + i) * QH + h * G + g) * D, heads[h]!, g, tp, o.tokens + i, r);
        }
      }
    }
    result.selfStudyQueries = Float32Array.from(study);
  }
  return result;
}
