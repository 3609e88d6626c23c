// The llama2.c example runner on shakes64 (head_dim 64, character-level tokenizer without
// byte-fallback tokens) against the numbers in ../shared/models/README.md: header, token
// ids, exact greedy text and windowed NLL, over the plain-JS reference attention and over
// a kvcompact KVCache with f32 storage.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { AttentionBackend } from '../../examples/llama2c/model';
import { MODELS } from '../../examples/llama2c/paths';
import { ReferenceAttention } from '../../examples/llama2c/reference-attention';
import { BOS, Tokenizer, TokenizerError } from '../../examples/llama2c/tokenizer';
import { libReady, loadModelFixture, maxLogitDiffToReference, modelChecks, type ReadmeNumbers } from './model-checks';

const SHAKES = MODELS.shakes64;
const PROMPT = 'ROMEO:';
const GREEDY_200 =
  'ROMEO:\n' +
  "And there is no more than the sea thousand man's\n" +
  'son that the sea thousand the seas of the stroke\n' +
  'That thou hast made the sea thousand the seas\n' +
  'That thou hast made the sea thousand the seas\n' +
  'That thou';
const NLL_2000 = 1.2756; // nats per token, first 2,000 characters of shakespeare_val.txt
const N_2000 = 2002; // BOS, dummy-prefix space, 2,000 characters

const fixture = loadModelFixture(SHAKES);
const { checkpoint, tokenizer, evalText, evalIds, dims } = fixture;
const README: ReadmeNumbers = {
  prompt: PROMPT, greedyTokens: 200, greedyText: GREEDY_200, nll: NLL_2000, ids: N_2000, windows: 4, nllTimeoutMs: 180_000,
};

describe('shakes64 checkpoint', () => {
  it('reads the header of the README table', () => {
    expect(checkpoint.config).toMatchObject({
      dim: 256, hiddenDim: 768, nLayers: 4, nHeads: 4, nKvHeads: 2, vocabSize: 68, seqLen: 512,
      headDim: 64, kvDim: 128, sharedClassifier: true,
    });
    expect(checkpoint.weights.wcls).toBe(checkpoint.weights.tokenEmbedding);
  });
});

describe('character-level tokenizer without byte fallback', () => {
  it('loads 68 tokens and knows it has no byte-fallback tokens', () => {
    expect(tokenizer.vocabSize).toBe(68);
    expect(tokenizer.byteFallback).toBe(false);
    // the byte-fallback tokenizer of stories260K still has them
    expect(Tokenizer.load(MODELS.stories260K.tokenizer, 512).byteFallback).toBe(true);
  });

  it('encodes BOS, the dummy-prefix space, then one token per character (no merges)', () => {
    const ids = tokenizer.encode(PROMPT, { bos: true });
    const space = tokenizer.tokenId(' ');
    expect(space).toBe(4); // <unk>, BOS, EOS, "\n", " ", ...
    expect(ids).toEqual([BOS, space, ...[...PROMPT].map((c) => tokenizer.tokenId(c))]);
    expect(ids.slice(2).every((id) => id >= 3 && id < 68)).toBe(true);
    // 65 characters in sorted order after the three special tokens
    const chars = Array.from({ length: 65 }, (_, i) => tokenizer.decode(0, 3 + i));
    expect([...chars].sort()).toEqual(chars);
    expect(tokenizer.encode('', { bos: true })).toEqual([BOS]);
  });

  it(`encodes the first 2,000 evaluation characters into exactly ${N_2000} ids and decodes them back`, () => {
    expect(evalIds.length).toBe(N_2000);
    expect(tokenizer.decodeAll(evalIds)).toBe(evalText);
    expect(tokenizer.decode(BOS, tokenizer.tokenId(' '))).toBe(''); // the dummy prefix after BOS
  });

  it('reports a character missing from the vocabulary instead of emitting byte + 3', () => {
    expect(() => tokenizer.encode('Zoë', { bos: true })).toThrow(TokenizerError);
    expect(() => tokenizer.encode('Zoë', { bos: true })).toThrow(/"ë".*no byte-fallback tokens/);
  });
});

describe('npm run eval --model shakes64: its own passages', () => {
  it('splits shakespeare_val.passages.txt into 70 passages of BOS + characters, cut to 512 tokens', async () => {
    const { loadStories, splitStories } = await import('../../examples/eval/stories');
    const { sharedModel } = await import('../../examples/llama2c/paths');
    const named = sharedModel('shakes64')!;
    expect(named.passages).toBe(SHAKES.passages);
    expect(sharedModel('no-such-model')).toBeUndefined();
    const texts = splitStories(readFileSync(named.passages, 'utf8'));
    expect(texts.length).toBe(70);
    const passages = loadStories(named.passages, tokenizer, 512);
    expect(passages.length).toBe(70);
    for (const [i, ids] of passages.entries()) {
      expect(ids[0]).toBe(BOS);
      expect(ids.length).toBe(Math.min(512, texts[i]!.length + 2)); // BOS, dummy-prefix space, one id per character
    }
  });
});

const shakesChecks = (
  name: string,
  makeBackend: () => AttentionBackend | Promise<AttentionBackend>,
  release: (b: AttentionBackend) => void,
): void => modelChecks(fixture, README, name, makeBackend, release);

describe('shakes64 over ReferenceAttention', () => {
  shakesChecks('reference', () => new ReferenceAttention(dims), () => {});
});

describe.skipIf(!libReady)('shakes64 over KVCacheAttention (f32 storage)', () => {
  type Adapter = typeof import('../../examples/llama2c/kvcache-attention');
  const adapter = (): Promise<Adapter> => import('../../examples/llama2c/kvcache-attention');
  const settings = { keys: 'f32', values: 'f32', blockSize: 32 } as const;

  shakesChecks(
    'kvcache f32',
    async () => new (await adapter()).KVCacheAttention(dims, settings),
    (b) => (b as InstanceType<Adapter['KVCacheAttention']>).dispose(),
  );

  describe('keys before RoPE (cache option rope: the cache rotates queries and keys)', () => {
    const ropeSettings = { ...settings, rope: { theta: 10000, style: 'interleaved' } } as const;
    shakesChecks(
      'kvcache f32, rope',
      async () => {
        const backend = new (await adapter()).KVCacheAttention(dims, ropeSettings);
        expect(backend.appliesRope).toBe(true);
        return backend;
      },
      (b) => (b as InstanceType<Adapter['KVCacheAttention']>).dispose(),
    );
  });

  it('kvcache f32: logits match the reference attention at head_dim 64', async () => {
    const backend = new (await adapter()).KVCacheAttention(dims, settings);
    try {
      expect(maxLogitDiffToReference(fixture, backend)).toBeLessThan(1e-3);
    } finally {
      backend.dispose();
    }
  });
});
