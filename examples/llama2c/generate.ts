// Greedy generation and the windowed next-token NLL used to score cache formats.
import { argmax, logSumExp } from './math';
import type { Transformer } from './model';
import { BOS } from './tokenizer';

export interface GenerateOptions {
  /** tokens per prefill chunk for the prompt (default 64) */
  chunkSize?: number;
  /** stop early when BOS is produced, as llama2.c does (default true) */
  stopAtBos?: boolean;
  /** called with each new token id and the id before it */
  onToken?: (token: number, prev: number) => void;
}

/**
 * Greedy (argmax) decoding of up to `steps` new tokens after `prompt`, starting from an
 * empty cache. Returns only the new tokens.
 */
export function generateGreedy(model: Transformer, prompt: readonly number[], steps: number, options: GenerateOptions = {}): number[] {
  if (prompt.length === 0) throw new RangeError('generateGreedy: empty prompt (encode with { bos: true })');
  const stopAtBos = options.stopAtBos ?? true;
  model.reset();
  let logits = model.prefill(prompt, { chunkSize: options.chunkSize ?? 64, logits: 'last' });
  const out: number[] = [];
  let prev = prompt[prompt.length - 1]!;
  for (let i = 0; i < steps; i++) {
    const next = argmax(logits);
    if (stopAtBos && next === BOS) break;
    out.push(next);
    options.onToken?.(next, prev);
    prev = next;
    if (i + 1 < steps) logits = model.step(next);
  }
  return out;
}

export interface NllOptions {
  /** tokens per prefill chunk (default 64) */
  chunkSize?: number;
  /** called after each window with the window start and its summed NLL */
  onWindow?: (start: number, tokens: number, sumNll: number) => void;
}

export interface NllResult {
  /** mean -log p per predicted token, in nats */
  nll: number;
  perplexity: number;
  /** number of predicted tokens (ids.length - 1) */
  tokens: number;
  windows: number;
}

/**
 * Mean next-token NLL of `ids` in windows ids[s, s + windowLen) for s = 0, windowLen - 1,
 * 2(windowLen - 1), ...: each window starts from an empty cache at position 0 and predicts
 * its tokens 1.. from the tokens before them, so every token but ids[0] is predicted once.
 */
export function nll(model: Transformer, ids: readonly number[], windowLen = 512, options: NllOptions = {}): NllResult {
  if (ids.length < 2) throw new RangeError('nll: need at least 2 tokens');
  if (!Number.isInteger(windowLen) || windowLen < 2) throw new RangeError(`nll: windowLen ${windowLen} must be an integer >= 2`);
  const V = model.config.vocabSize;
  let total = 0;
  let count = 0;
  let windows = 0;
  for (let s = 0; s + 1 < ids.length; s += windowLen - 1) {
    const end = Math.min(s + windowLen, ids.length);
    // The last token of a window only serves as a target, so it is never run.
    const inputs = ids.slice(s, end - 1);
    model.reset();
    const logits = model.prefill(inputs, { chunkSize: options.chunkSize ?? 64, logits: 'all' });
    let sum = 0;
    for (let i = 0; i < inputs.length; i++) {
      const target = ids[s + i + 1]!;
      sum += logSumExp(logits, i * V, V) - logits[i * V + target]!;
    }
    total += sum;
    count += inputs.length;
    windows++;
    options.onWindow?.(s, inputs.length, sum);
  }
  return { nll: total / count, perplexity: Math.exp(total / count), tokens: count, windows };
}
