// Seeded temperature-1 sampling of the next token, for reproducible continuations (the
// self-study reference queries of Attention Matching are recorded on such continuations).

/** mulberry32: a small seeded generator of uniforms in [0, 1). */
export class Sampler {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  uniform(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(this.state ^ (this.state >>> 15), this.state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
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
