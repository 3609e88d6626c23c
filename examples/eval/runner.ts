// Story-by-story evaluation of cache methods on a real checkpoint.
//
// Protocol, for a story of n tokens ids[0..n) and p = floor(n / 2):
//   1. prefill ids[0..p) (chunked, causal),
//   2. let the method transform the cache (nothing for storage formats; evict; compact),
//   3. feed ids[p..n-1) (chunked, causal over whatever the cache holds) and score
//      -log p(ids[t+1]) and argmax at every fed position t,
// and compare each argmax with the argmax of an f32 cache at the same position.
import { KVCache, type Sequence } from '../../lib/index';
import type { Checkpoint } from '../llama2c/checkpoint';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import { argmax, logSumExp } from '../llama2c/math';
import { Transformer, type AttentionDims } from '../llama2c/model';
import { SequenceAttention, type AttentionCallOptions } from './sequence-attention';
import { prefixLength } from './stories';

export interface ModelHandle {
  model: Transformer;
  backend: SequenceAttention;
  /** frees the sequence */
  release(): void;
}

export interface StoryContext {
  readonly ids: readonly number[];
  /** tokens prefilled before the method acts (p) */
  readonly prefix: number;
  readonly checkpoint: Checkpoint;
  readonly dims: AttentionDims;
  /** tokens per prefill chunk */
  readonly chunk: number;
  /** storage of the shared prefix that eviction and compaction methods start from */
  readonly base: CacheSettings;
  /** a model over a new, empty sequence of a cache with these settings (caches are reused across stories) */
  fresh(settings: CacheSettings, options?: AttentionCallOptions): ModelHandle;
  /**
   * A model over a fork of the story's prefix ids[0..p), prefilled once per story in `base`
   * storage with the given attention options (e.g. { accumulateScores: true }), positioned at p.
   */
  forkPrefix(observe?: AttentionCallOptions): ModelHandle;
  /** Feeds ids[p..n-1) in chunks; returns their logits [n-1-p, vocab]. */
  scoreRest(model: Transformer): Float32Array;
}

export interface MethodRun {
  /** logits of the fed positions p..n-2: [n-1-p, vocab] */
  logits: Float32Array;
  /** rows held while scoring / rows an uncompressed cache would hold (1 for storage formats) */
  keptFraction: number;
  /** precision 'fast' methods: the same cache's logits in exact precision (ΔNLL and top-1 vs exact) */
  exact?: Float32Array;
}

export interface Method {
  /** unique and stable, e.g. "int8-g8-rk" */
  id: string;
  /** series in the plot and group in the table, e.g. "evict h2o" */
  family: string;
  /** row label */
  label: string;
  /** position along the family's line (e.g. keep ratio); undefined for single points */
  param?: number;
  /** KV bytes per token of the storage the method's rows use (all layers, block overhead included) */
  rowBytesPerToken: number;
  run(ctx: StoryContext): Promise<MethodRun>;
}

/** Sums over the scored tokens of one story (or of many, when merged). */
export interface Score {
  nllSum: number;
  /** argmax equal to the f32 cache's argmax */
  agree: number;
  tokens: number;
  /** sum over stories of keptFraction × tokens, so that kept = keptSum / tokens */
  keptSum: number;
  stories: number;
  ms: number;
  error?: string;
  /** methods that return exact logits too: NLL of those, and argmax equal to theirs */
  exactNllSum?: number;
  exactAgree?: number;
}

export function emptyScore(): Score {
  return { nllSum: 0, agree: 0, tokens: 0, keptSum: 0, stories: 0, ms: 0 };
}

export function mergeScore(into: Score, s: Score): void {
  into.nllSum += s.nllSum;
  into.agree += s.agree;
  into.tokens += s.tokens;
  into.keptSum += s.keptSum;
  into.stories += s.stories;
  into.ms += s.ms;
  if (s.exactNllSum !== undefined) {
    into.exactNllSum = (into.exactNllSum ?? 0) + s.exactNllSum;
    into.exactAgree = (into.exactAgree ?? 0) + (s.exactAgree ?? 0);
  }
  if (s.error && !into.error) into.error = s.error;
}

function settingsKey(s: CacheSettings): string {
  // Keys sorted at every level (nested options such as lowRank included).
  const sorted = (_: string, v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v;
  return JSON.stringify(s, sorted);
}

export interface EvaluatorOptions {
  chunk?: number;
  /** storage of the shared prefix for eviction/compaction (default f16 keys and values) */
  base?: CacheSettings;
  /** CPU threads per cache (default 1: this model's streams are tiny) */
  threads?: number;
  /** prefill the prefix again for every method instead of forking a shared one */
  noFork?: boolean;
}

export class StoryEvaluator {
  readonly dims: AttentionDims;
  readonly chunk: number;
  readonly base: CacheSettings;
  private readonly threads: number;
  private readonly noFork: boolean;
  private readonly caches = new Map<string, KVCache>();

  constructor(
    readonly checkpoint: Checkpoint,
    options: EvaluatorOptions = {},
  ) {
    const c = checkpoint.config;
    this.dims = { layers: c.nLayers, kvHeads: c.nKvHeads, headDim: c.headDim, queryHeads: c.nHeads };
    this.chunk = options.chunk ?? 64;
    this.base = options.base ?? { keys: 'f16', values: 'f16' };
    this.threads = options.threads ?? 1;
    this.noFork = options.noFork ?? false;
  }

  cache(settings: CacheSettings): KVCache {
    const key = settingsKey(settings);
    let cache = this.caches.get(key);
    if (!cache) {
      cache = new KVCache({ threads: this.threads, ...settings, ...this.dims });
      this.caches.set(key, cache);
    }
    return cache;
  }

  private handle(seq: Sequence, options: AttentionCallOptions | undefined, position: number): ModelHandle {
    const backend = new SequenceAttention(this.dims, seq, options);
    const model = new Transformer(this.checkpoint, backend);
    model.seek(position);
    return { model, backend, release: () => backend.sequence.free() };
  }

  /**
   * Scores of every method on one story. The f32 cache's argmax is computed first;
   * a method that throws gets an error and no tokens.
   */
  async evaluateStory(ids: readonly number[], methods: readonly Method[]): Promise<Map<string, Score>> {
    const n = ids.length;
    const p = prefixLength(ids);
    const V = this.checkpoint.config.vocabSize;
    const count = n - 1 - p;
    const prefixes = new Map<string, ModelHandle>();

    const ctx: StoryContext = {
      ids,
      prefix: p,
      checkpoint: this.checkpoint,
      dims: this.dims,
      chunk: this.chunk,
      base: this.base,
      fresh: (settings, options) => this.handle(this.cache(settings).createSequence(), options, 0),
      forkPrefix: (observe) => {
        const key = JSON.stringify(observe ?? {});
        let shared = prefixes.get(key);
        if (this.noFork || !shared) {
          const h = ctx.fresh(this.base, observe);
          if (p > 0) h.model.prefill(ids.slice(0, p), { chunkSize: this.chunk, logits: 'none' });
          if (this.noFork) {
            h.backend.attentionOptions = undefined;
            return h;
          }
          shared = h;
          prefixes.set(key, shared);
        }
        return this.handle(shared.backend.sequence.fork(), undefined, p);
      },
      scoreRest: (model) => {
        model.seek(p);
        return model.prefill(ids.slice(p, n - 1), { chunkSize: this.chunk, logits: 'all' });
      },
    };

    // The f32 cache: reference argmax (and its own NLL).
    const ref = ctx.fresh({ keys: 'f32', values: 'f32' });
    let refLogits: Float32Array;
    try {
      if (p > 0) ref.model.prefill(ids.slice(0, p), { chunkSize: this.chunk, logits: 'none' });
      refLogits = ctx.scoreRest(ref.model);
    } finally {
      ref.release();
    }
    const refArgmax = new Int32Array(count);
    for (let i = 0; i < count; i++) refArgmax[i] = argmax(refLogits, i * V, V);

    const scores = new Map<string, Score>();
    try {
      for (const m of methods) {
        const t0 = performance.now();
        const s = emptyScore();
        try {
          const r = m.id === 'f32' ? { logits: refLogits, keptFraction: 1 } : await m.run(ctx);
          if (r.logits.length !== count * V) throw new Error(`method returned ${r.logits.length / V} logit rows, expected ${count}`);
          for (let i = 0; i < count; i++) {
            const off = i * V;
            s.nllSum += logSumExp(r.logits, off, V) - r.logits[off + ids[p + 1 + i]!]!;
            if (argmax(r.logits, off, V) === refArgmax[i]) s.agree++;
            if (r.exact) {
              s.exactNllSum = (s.exactNllSum ?? 0) + logSumExp(r.exact, off, V) - r.exact[off + ids[p + 1 + i]!]!;
              if (argmax(r.logits, off, V) === argmax(r.exact, off, V)) s.exactAgree = (s.exactAgree ?? 0) + 1;
            }
          }
          s.tokens = count;
          s.keptSum = r.keptFraction * count;
          s.stories = 1;
        } catch (err) {
          s.error = err instanceof Error ? `${err.name === 'Error' ? '' : `${err.name}: `}${err.message}` : String(err);
        }
        s.ms = performance.now() - t0;
        scores.set(m.id, s);
      }
    } finally {
      for (const h of prefixes.values()) h.release();
    }
    return scores;
  }

  dispose(): void {
    for (const c of this.caches.values()) c.dispose();
    this.caches.clear();
  }
}
