// Llama forward pass for llama2.c checkpoints over a batch of tokens (chunked prefill
// or one token at a time). The model owns no KV state: keys/values and attention are
// delegated to an AttentionBackend, so one model runs over any cache.
import type { Checkpoint, LlamaConfig } from './checkpoint';
import { matmul, matmulAdd, rmsnorm, rope, RopeTable, swiglu } from './math';

/**
 * Where the model stores K/V and computes attention, for one sequence.
 * Arrays passed in are scratch buffers of the model: copy, do not keep them.
 */
export interface AttentionBackend {
  /** keys/values: [T, kvHeads, headDim] float32 (keys already RoPE'd), for one layer, positions = consecutive from `startPos` */
  append(layer: number, keys: Float32Array, values: Float32Array, startPos: number): void;
  /** queries: [Tq, queryHeads, headDim] (RoPE'd); query i sits at the position of the i-th of the last Tq appended rows; causal */
  attention(layer: number, queries: Float32Array, tq: number): Float32Array; // [Tq, queryHeads, headDim]
  truncate?(n: number): void;
  reset(): void;
  /**
   * true: the backend applies RoPE itself (a kvcompact cache with the `rope` option), so
   * append receives keys and attention receives queries *before* RoPE.
   */
  readonly appliesRope?: boolean;
}

/** Shape of the K/V and queries the model hands to a backend. */
export interface AttentionDims {
  layers: number;
  kvHeads: number;
  headDim: number;
  queryHeads: number;
}

export function attentionDims(config: LlamaConfig): AttentionDims {
  return { layers: config.nLayers, kvHeads: config.nKvHeads, headDim: config.headDim, queryHeads: config.nHeads };
}

/** 'all': logits for every input token [T, vocab]; 'last': [vocab] for the last one; 'none': empty */
export type LogitsMode = 'all' | 'last' | 'none';

interface Scratch {
  capacity: number;
  x: Float32Array; // [T, dim] residual stream
  xb: Float32Array; // [T, dim] normed input of a sublayer
  q: Float32Array; // [T, dim]
  k: Float32Array; // [T, kvDim]
  v: Float32Array; // [T, kvDim]
  hb: Float32Array; // [T, hidden]
  hb2: Float32Array; // [T, hidden]
}

export class Transformer {
  readonly config: LlamaConfig;
  private readonly rope: RopeTable;
  private scratch: Scratch | undefined;
  private pos = 0;

  constructor(
    readonly checkpoint: Checkpoint,
    public backend: AttentionBackend,
  ) {
    this.config = checkpoint.config;
    this.rope = new RopeTable(this.config.headDim);
  }

  /** position the next token will take (number of tokens already in the backend) */
  get position(): number {
    return this.pos;
  }

  /** start a new sequence at position 0 */
  reset(): void {
    this.backend.reset();
    this.pos = 0;
  }

  /**
   * Continue at `position` over a backend that already holds the sequence up to there
   * (e.g. after swapping in a fork of a prefilled sequence, or after eviction/compaction,
   * where the backend holds fewer rows than positions).
   */
  seek(position: number): void {
    if (!Number.isInteger(position) || position < 0) throw new RangeError(`seek(${position}): expected a non-negative integer`);
    this.pos = position;
  }

  /** roll back to the first n tokens (needs a backend with truncate) */
  truncate(n: number): void {
    if (!this.backend.truncate) throw new Error('this attention backend does not support truncate');
    if (!Number.isInteger(n) || n < 0 || n > this.pos) {
      throw new RangeError(`truncate(${n}): expected an integer in [0, ${this.pos}]`);
    }
    this.backend.truncate(n);
    this.pos = n;
  }

  private buffers(T: number): Scratch {
    if (this.scratch && this.scratch.capacity >= T) return this.scratch;
    const { dim, kvDim, hiddenDim } = this.config;
    this.scratch = {
      capacity: T,
      x: new Float32Array(T * dim),
      xb: new Float32Array(T * dim),
      q: new Float32Array(T * dim),
      k: new Float32Array(T * kvDim),
      v: new Float32Array(T * kvDim),
      hb: new Float32Array(T * hiddenDim),
      hb2: new Float32Array(T * hiddenDim),
    };
    return this.scratch;
  }

  /**
   * Run T tokens at positions position..position+T-1 through the model as one batch
   * (one append and one causal attention call per layer), then advance the position.
   */
  forward(tokens: ArrayLike<number>, logits: LogitsMode = 'last'): Float32Array {
    const T = tokens.length;
    if (T === 0) throw new RangeError('forward: no tokens');
    const c = this.config;
    const { dim, kvDim, hiddenDim: hidden, nLayers, nHeads, nKvHeads, vocabSize } = c;
    const w = this.checkpoint.weights;
    const s = this.buffers(T);
    const start = this.pos;
    this.rope.ensure(start + T);

    for (let t = 0; t < T; t++) {
      const tok = tokens[t]!;
      if (!Number.isInteger(tok) || tok < 0 || tok >= vocabSize) {
        throw new RangeError(`forward: token ${tok} at index ${t} is outside the vocabulary (0..${vocabSize - 1})`);
      }
      s.x.set(w.tokenEmbedding.subarray(tok * dim, tok * dim + dim), t * dim);
    }

    const q = s.q.subarray(0, T * dim);
    const k = s.k.subarray(0, T * kvDim);
    const v = s.v.subarray(0, T * kvDim);
    for (let l = 0; l < nLayers; l++) {
      // attention sublayer
      for (let t = 0; t < T; t++) rmsnorm(s.xb, t * dim, s.x, t * dim, w.rmsAtt, l * dim, dim);
      matmul(s.q, s.xb, w.wq, l * dim * dim, dim, dim, T);
      matmul(s.k, s.xb, w.wk, l * kvDim * dim, dim, kvDim, T);
      matmul(s.v, s.xb, w.wv, l * kvDim * dim, dim, kvDim, T);
      if (!this.backend.appliesRope) {
        for (let t = 0; t < T; t++) {
          rope(s.q, t * dim, nHeads, this.rope, start + t);
          rope(s.k, t * kvDim, nKvHeads, this.rope, start + t);
        }
      }
      this.backend.append(l, k, v, start);
      const att = this.backend.attention(l, q, T);
      if (att.length !== T * dim) {
        throw new Error(`attention backend returned ${att.length} values for layer ${l}, expected ${T * dim}`);
      }
      matmulAdd(s.x, att, w.wo, l * dim * dim, dim, dim, T);

      // SwiGLU feed-forward sublayer
      for (let t = 0; t < T; t++) rmsnorm(s.xb, t * dim, s.x, t * dim, w.rmsFfn, l * dim, dim);
      matmul(s.hb, s.xb, w.w1, l * hidden * dim, dim, hidden, T);
      matmul(s.hb2, s.xb, w.w3, l * hidden * dim, dim, hidden, T);
      swiglu(s.hb, s.hb2, T * hidden);
      matmulAdd(s.x, s.hb, w.w2, l * dim * hidden, hidden, dim, T);
    }
    this.pos = start + T;

    if (logits === 'none') return new Float32Array(0);
    const first = logits === 'all' ? 0 : T - 1;
    const rows = T - first;
    for (let t = first; t < T; t++) rmsnorm(s.xb, (t - first) * dim, s.x, t * dim, w.rmsFinal, 0, dim);
    const out = new Float32Array(rows * vocabSize);
    matmul(out, s.xb, w.wcls, 0, dim, vocabSize, rows);
    return out;
  }

  /**
   * Forward many tokens in chunks of at most chunkSize (bounding scratch memory and the
   * size of each attention call). With 'all', returns [T, vocab] for every token.
   */
  prefill(tokens: ArrayLike<number>, options: { chunkSize?: number; logits?: LogitsMode } = {}): Float32Array {
    const chunkSize = options.chunkSize ?? 64;
    const mode = options.logits ?? 'last';
    const T = tokens.length;
    if (T === 0) throw new RangeError('prefill: no tokens');
    if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new RangeError(`prefill: chunkSize ${chunkSize} must be a positive integer`);
    const V = this.config.vocabSize;
    const all = mode === 'all' ? new Float32Array(T * V) : undefined;
    let last: Float32Array = new Float32Array(0);
    for (let i = 0; i < T; i += chunkSize) {
      const end = Math.min(i + chunkSize, T);
      const chunk = Array.prototype.slice.call(tokens, i, end) as number[];
      const isLast = end === T;
      const out = this.forward(chunk, mode === 'all' ? 'all' : mode === 'last' && isLast ? 'last' : 'none');
      if (all) all.set(out, i * V);
      else if (isLast) last = out;
    }
    return all ?? last;
  }

  /** one decode step: logits [vocab] for `token` at the current position */
  step(token: number): Float32Array {
    return this.forward([token], 'last');
  }
}
