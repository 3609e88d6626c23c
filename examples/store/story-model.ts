// The stories260K runner as the prefix-store demo, test and benchmark use it: prefill a
// document into a new sequence (recording queries for compaction), compact it, and continue a
// sequence from a given position. One place, so the three measure the same work.
import { Compactor, type KVCache, type KVCacheOptions, type Sequence } from '../../lib/index';
import { loadCheckpoint, type Checkpoint } from '../llama2c/checkpoint';
import { attentionDims, Transformer, type AttentionDims } from '../llama2c/model';
import { MODEL_PATH, TOKENIZER_PATH } from '../llama2c/paths';
import { BOS, Tokenizer } from '../llama2c/tokenizer';
import { SequenceAttention } from '../eval/sequence-attention';

export interface StoryModel {
  checkpoint: Checkpoint;
  tokenizer: Tokenizer;
  dims: AttentionDims;
}

export function loadStoryModel(modelPath = MODEL_PATH, tokenizerPath = TOKENIZER_PATH): StoryModel {
  const checkpoint = loadCheckpoint(modelPath);
  return { checkpoint, tokenizer: Tokenizer.load(tokenizerPath, checkpoint.config.vocabSize), dims: attentionDims(checkpoint.config) };
}

/** Cache options for the model's shape with the given storage settings. */
export function cacheOptions(m: StoryModel, settings: Partial<KVCacheOptions> = {}): KVCacheOptions {
  return { threads: 1, ...settings, ...m.dims };
}

/** Token ids of `text` (with BOS), at most `max` of them. */
export function encode(m: StoryModel, text: string, max = m.checkpoint.config.seqLen): number[] {
  return m.tokenizer.encode(text, { bos: true }).slice(0, max);
}

/**
 * Runs ids[from..] through the model over `seq` (which must hold exactly the first `from`
 * tokens' cache) in chunks, recording queries; returns the logits after the last token.
 */
export function forward(m: StoryModel, seq: Sequence, ids: readonly number[], from: number, chunk = 64): Float32Array {
  const backend = new SequenceAttention(m.dims, seq, { recordQueries: true });
  const model = new Transformer(m.checkpoint, backend);
  model.seek(from);
  let logits: Float32Array = new Float32Array(0);
  for (let t = from; t < ids.length; t += chunk) logits = model.forward(ids.slice(t, Math.min(ids.length, t + chunk)), 'last');
  return logits;
}

/** A new sequence of `cache` holding the prefill of `ids`. */
export function prefill(m: StoryModel, cache: KVCache, ids: readonly number[], chunk = 64): Sequence {
  const seq = cache.createSequence();
  forward(m, seq, ids, 0, chunk);
  return seq;
}

/** Attention Matching compaction on the queries recorded during prefill. */
export async function compact(seq: Sequence, ratio: number): Promise<void> {
  await new Compactor({ ratio, protect: { sinks: 4, recent: 16 }, threads: 1 }).compact(seq);
}

export { BOS };

/**
 * Greedy continuation over `seq` (holding the cache of ids[0..from)): prefills ids[from..],
 * then generates up to `steps` tokens. Returns them and the time to the first one.
 */
export function continueGreedy(m: StoryModel, seq: Sequence, ids: readonly number[], from: number, steps: number): { tokens: number[]; firstTokenMs: number } {
  const t0 = performance.now();
  const backend = new SequenceAttention(m.dims, seq);
  const model = new Transformer(m.checkpoint, backend);
  model.seek(from);
  let logits = model.prefill(ids.slice(from), { chunkSize: 64, logits: 'last' });
  const tokens: number[] = [];
  let firstTokenMs = 0;
  for (let i = 0; i < steps; i++) {
    let next = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[next]!) next = j;
    if (i === 0) firstTokenMs = performance.now() - t0;
    if (next === BOS) break;
    tokens.push(next);
    if (i + 1 < steps) logits = model.step(next);
  }
  return { tokens, firstTokenMs };
}

/** Text of generated tokens (llama2.c's decode rules). */
export function decode(m: StoryModel, prev: number, tokens: readonly number[]): string {
  const bytes: number[] = [];
  for (const t of tokens) {
    bytes.push(...m.tokenizer.decodePiece(prev, t));
    prev = t;
  }
  return Buffer.from(bytes).toString('utf8');
}
