// The llama2.c example runner on shakes64 (head_dim 64, character-level tokenizer without
// byte-fallback tokens) against the numbers in ../shared/models/README.md: header, token
// ids, exact greedy text and windowed NLL, over the plain-JS reference attention and over
// a kvcompact KVCache with f32 storage.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, type Checkpoint } from '../../examples/llama2c/checkpoint';
import { generateGreedy, nll } from '../../examples/llama2c/generate';
import { attentionDims, Transformer, type AttentionBackend } from '../../examples/llama2c/model';
import { MODELS } from '../../examples/llama2c/paths';
import { ReferenceAttention } from '../../examples/llama2c/reference-attention';
import { BOS, Tokenizer, TokenizerError } from '../../examples/llama2c/tokenizer';

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

const checkpoint: Checkpoint = loadCheckpoint(SHAKES.model);
const tokenizer = Tokenizer.load(SHAKES.tokenizer, checkpoint.config.vocabSize);
const evalText = readFileSync(SHAKES.evalText, 'utf8').slice(0, 2000);
const evalIds = tokenizer.encode(evalText, { bos: true });
const dims = attentionDims(checkpoint.config);

let libReady = false;
try {
  const lib: Record<string, unknown> = await import('../../lib/index');
  libReady = typeof lib.KVCache === 'function';
} catch {
  libReady = false;
}

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

function modelChecks(
  name: string,
  makeBackend: () => AttentionBackend | Promise<AttentionBackend>,
  release: (b: AttentionBackend) => void,
): void {
  let backend: AttentionBackend;
  let model: Transformer;
  beforeAll(async () => {
    backend = await makeBackend();
    model = new Transformer(checkpoint, backend);
  });
  afterAll(() => release(backend));

  it(`${name}: greedy 200 characters after "${PROMPT}" reproduce the README text exactly`, () => {
    const prompt = tokenizer.encode(PROMPT, { bos: true });
    const out = generateGreedy(model, prompt, 200);
    expect(out.length).toBe(200);
    expect(tokenizer.decodeAll([...prompt, ...out])).toBe(GREEDY_200);
  });

  it(`${name}: NLL on the first 2,000 characters is ${NLL_2000}`, { timeout: 180_000 }, () => {
    const r = nll(model, evalIds, 512);
    expect(r.tokens).toBe(N_2000 - 1);
    expect(r.windows).toBe(4);
    expect(Math.abs(r.nll - NLL_2000)).toBeLessThan(1e-3);
  });
}

describe('shakes64 over ReferenceAttention', () => {
  modelChecks('reference', () => new ReferenceAttention(dims), () => {});
});

describe.skipIf(!libReady)('shakes64 over KVCacheAttention (f32 storage)', () => {
  type Adapter = typeof import('../../examples/llama2c/kvcache-attention');
  const adapter = (): Promise<Adapter> => import('../../examples/llama2c/kvcache-attention');
  const settings = { keys: 'f32', values: 'f32', blockSize: 32 } as const;

  modelChecks(
    'kvcache f32',
    async () => new (await adapter()).KVCacheAttention(dims, settings),
    (b) => (b as InstanceType<Adapter['KVCacheAttention']>).dispose(),
  );

  describe('keys before RoPE (cache option rope: the cache rotates queries and keys)', () => {
    const ropeSettings = { ...settings, rope: { theta: 10000, style: 'interleaved' } } as const;
    modelChecks(
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
    const { KVCacheAttention } = await adapter();
    const ids = evalIds.slice(0, 300);
    const ref = new Transformer(checkpoint, new ReferenceAttention(dims)).prefill(ids, { chunkSize: 64, logits: 'all' });
    const backend = new KVCacheAttention(dims, settings);
    try {
      const got = new Transformer(checkpoint, backend).prefill(ids, { chunkSize: 64, logits: 'all' });
      let maxDiff = 0;
      for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - got[i]!));
      expect(maxDiff).toBeLessThan(1e-3);
    } finally {
      backend.dispose();
    }
  });
});
