// The llama2.c example runner against the numbers in ../shared/models/README.md:
// tokenizer ids, exact greedy text and windowed NLL, first over the plain-JS reference
// attention, then over a kvcompact KVCache with f32 storage.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CheckpointError, parseCheckpoint } from '../../examples/llama2c/checkpoint';
import type { AttentionBackend } from '../../examples/llama2c/model';
import { ReferenceAttention } from '../../examples/llama2c/reference-attention';
import { BOS } from '../../examples/llama2c/tokenizer';
import { MODELS } from '../../examples/llama2c/paths';
import { libReady, loadModelFixture, maxLogitDiffToReference, modelChecks, type ReadmeNumbers } from './model-checks';

const MODEL = MODELS.stories260K.model;

const PROMPT = 'Once upon a time';
const GREEDY_60 =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
  'One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily';
const NLL_2000 = 1.7522; // nats per token, first 2,000 characters of the eval text
const N_2000 = 1006;

const fixture = loadModelFixture(MODELS.stories260K);
const { checkpoint, tokenizer, evalText, evalIds, dims } = fixture;
const README: ReadmeNumbers = { prompt: PROMPT, greedyTokens: 60, greedyText: GREEDY_60, nll: NLL_2000, ids: N_2000, windows: 2 };

describe('llama2c checkpoint', () => {
  it('reads the stories260K header', () => {
    expect(checkpoint.config).toMatchObject({
      dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512,
      headDim: 8, kvDim: 32, sharedClassifier: true,
    });
    expect(checkpoint.weights.wcls).toBe(checkpoint.weights.tokenEmbedding);
    expect(checkpoint.weights.rmsFinal.length).toBe(64);
  });

  it('rejects truncated files and bad headers with a clear error', () => {
    const bytes = readFileSync(MODEL);
    expect(() => parseCheckpoint(bytes.subarray(0, 10), 'short.bin')).toThrow(/shorter than the 28-byte/);
    expect(() => parseCheckpoint(bytes.subarray(0, bytes.length - 4), 'cut.bin')).toThrow(CheckpointError);
    expect(() => parseCheckpoint(bytes.subarray(0, bytes.length - 4), 'cut.bin')).toThrow(/implies 1056540 bytes/);
    const bad = new Uint8Array(bytes);
    new DataView(bad.buffer).setInt32(12, 7, true); // n_heads 7 does not divide dim 64
    expect(() => parseCheckpoint(bad, 'bad.bin')).toThrow(/not a multiple of n_heads/);
  });
});

describe('llama2c tokenizer', () => {
  it('encodes the prompt with BOS, dummy prefix and merges', () => {
    // [BOS, " Once", " upon", " a", " time"]
    expect(tokenizer.encode(PROMPT, { bos: true })).toEqual([BOS, 403, 407, 261, 378]);
    expect(tokenizer.encode('', { bos: true })).toEqual([BOS]);
  });

  it(`encodes the first 2,000 eval characters into exactly ${N_2000} ids`, () => {
    expect(evalIds.length).toBe(N_2000);
    expect(evalIds[0]).toBe(BOS);
  });

  it('round-trips text, including byte-fallback characters', () => {
    expect(tokenizer.decodeAll(evalIds)).toBe(evalText);
    const unicode = 'Zoë saw a 🐉 — “hi”\n';
    const ids = tokenizer.encode(unicode, { bos: true });
    expect(ids.some((id) => id >= 3 && id <= 258)).toBe(true);
    expect(tokenizer.decodeAll(ids)).toBe(unicode);
  });

  it('drops the leading space of the piece after BOS only', () => {
    expect(tokenizer.decode(BOS, 403)).toBe('Once');
    expect(tokenizer.decode(261, 403)).toBe(' Once');
    expect(tokenizer.decodePiece(5, 13 /* <0x0A> */)).toEqual(Uint8Array.of(10));
  });
});

/** The README checks, plus chunked prefill against single steps and truncate, over any backend. */
function storiesChecks(
  name: string,
  makeBackend: () => AttentionBackend | Promise<AttentionBackend>,
  release: (b: AttentionBackend) => void,
): void {
  modelChecks(fixture, README, name, makeBackend, release, (get) => {
    it(`${name}: chunked prefill, single steps and truncate agree`, () => {
      const { model, backend } = get();
      const ids = evalIds.slice(0, 40);
      model.reset();
      const chunked = model.prefill(ids, { chunkSize: 7, logits: 'all' });
      model.reset();
      const V = checkpoint.config.vocabSize;
      for (let t = 0; t < ids.length; t++) {
        const logits = model.step(ids[t]!);
        for (let v = 0; v < V; v += 17) expect(Math.abs(logits[v]! - chunked[t * V + v]!)).toBeLessThan(1e-4);
      }
      if (backend.truncate) {
        model.truncate(25);
        const again = model.prefill(ids.slice(25), { chunkSize: 4, logits: 'all' });
        for (let v = 0; v < V; v++) expect(Math.abs(again[v]! - chunked[25 * V + v]!)).toBeLessThan(1e-4);
      }
    });
  });
}

describe('llama2c model over ReferenceAttention', () => {
  storiesChecks('reference', () => new ReferenceAttention(dims), () => {});
});

describe.skipIf(!libReady)('llama2c model over KVCacheAttention (f32 storage)', () => {
  // Imported lazily: a skipped describe still runs its body, and this module needs the library.
  type Adapter = typeof import('../../examples/llama2c/kvcache-attention');
  const adapter = (): Promise<Adapter> => import('../../examples/llama2c/kvcache-attention');
  const settings = { keys: 'f32', values: 'f32', blockSize: 32 } as const;

  storiesChecks(
    'kvcache f32',
    async () => new (await adapter()).KVCacheAttention(dims, settings),
    (b) => (b as InstanceType<Adapter['KVCacheAttention']>).dispose(),
  );

  it('kvcache f32: logits match the reference attention', async () => {
    const backend = new (await adapter()).KVCacheAttention(dims, settings);
    try {
      expect(maxLogitDiffToReference(fixture, backend)).toBeLessThan(1e-3);
    } finally {
      backend.dispose();
    }
  });
});
