// The evaluation text: stories separated by lines "<|endoftext|>", tokenized one by one
// (BOS + text), at most maxTokens tokens each (the model's trained context is 512).
import { readFileSync } from 'node:fs';
import type { Tokenizer } from '../llama2c/tokenizer';

export const STORY_SEPARATOR = '<|endoftext|>';

/** Story texts of a file, in order, without separators or surrounding blank lines. */
export function splitStories(text: string): string[] {
  return text
    .split(/^<\|endoftext\|>[ \t]*$/m)
    .map((s) => s.replace(/^\s*\n/, '').replace(/\s+$/, ''))
    .filter((s) => s.length > 0);
}

export function loadStories(file: string, tokenizer: Tokenizer, maxTokens = 512, limit = Infinity): number[][] {
  const stories = splitStories(readFileSync(file, 'utf8'));
  const out: number[][] = [];
  for (const s of stories) {
    if (out.length >= limit) break;
    const ids = tokenizer.encode(s, { bos: true }).slice(0, maxTokens);
    if (ids.length >= 8) out.push(ids); // too short to split into a prefix and a scored half
  }
  return out;
}

/**
 * Tokens [0, prefixLength) are prefilled before a method transforms the cache; the method
 * then predicts ids[prefixLength + 1 ..] from the tokens before them (the logits of token
 * ids[prefixLength] onwards), so every scored prediction sees the transformed cache.
 */
export function prefixLength(ids: readonly number[]): number {
  return Math.floor(ids.length / 2);
}
