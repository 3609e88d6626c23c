// Seeded temperature-1 sampling of the next token, for reproducible continuations (the
// self-study reference queries of Attention Matching are recorded on such continuations).
import { Mulberry32 } from '../shared/mulberry32';

export class Sampler {
  private readonly bits: Mulberry32;
  constructor(seed: number) {
    this.bits = new Mulberry32(seed);
  }
  /** Uniform in [0, 1). */
  uniform(): number {
    return this.bits.u32() / 4294967296;
  }
  /** A token drawn from softmax(logits). */
  sample(logits: Float32Array): number {
    let max = -Infinity;
    for (const x of logits) max = Math.max(max, x);
    const p = new Float64Array(logits.length);
    let sum = 0;
    for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp(logits[i]! - max);
    let rest = this.uniform() * sum;
    for (let i = 0; i < p.length - 1; i++) if ((rest -= p[i]!) < 0) return i;
    return p.length - 1;
  }
}
