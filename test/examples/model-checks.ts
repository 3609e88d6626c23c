// The README checks of a shared model (exact greedy text, windowed NLL, logits against the
// reference attention), written once for every model and attention backend the tests run.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadCheckpoint, type Checkpoint } from '../../examples/llama2c/checkpoint';
import { generateGreedy, nll } from '../../examples/llama2c/generate';
import { attentionDims, Transformer, type AttentionBackend } from '../../examples/llama2c/model';
import type { SharedModel } from '../../examples/llama2c/paths';
import { ReferenceAttention } from '../../examples/llama2c/reference-attention';
import { Tokenizer } from '../../examples/llama2c/tokenizer';

/** A loaded model with its tokenizer and the first 2,000 characters of its evaluation text. */
export interface ModelFixture {
  checkpoint: Checkpoint;
  tokenizer: Tokenizer;
  evalText: string;
  evalIds: number[];
  dims: ReturnType<typeof attentionDims>;
}

export function loadModelFixture(model: SharedModel): ModelFixture {
  const checkpoint = loadCheckpoint(model.model);
  const tokenizer = Tokenizer.load(model.tokenizer, checkpoint.config.vocabSize);
  const evalText = readFileSync(model.evalText, 'utf8').slice(0, 2000);
  return { checkpoint, tokenizer, evalText, evalIds: tokenizer.encode(evalText, { bos: true }), dims: attentionDims(checkpoint.config) };
}

/** Whether the library is importable (built); suites that need it run only then. */
export const libReady: boolean = await import('../../lib/index').then(
  (lib: Record<string, unknown>) => typeof lib['KVCache'] === 'function',
  () => false,
);

/** The README's numbers for one model. */
export interface ReadmeNumbers {
  prompt: string;
  /** generated ids after the prompt, and the decoded prompt + generation */
  greedyTokens: number;
  greedyText: string;
  /** nats per token over the first 2,000 characters, in 512-token windows */
  nll: number;
  ids: number;
  windows: number;
  nllTimeoutMs?: number;
}

/** Registers the greedy-text and NLL checks over the backend `makeBackend` returns. */
export function modelChecks(
  fixture: ModelFixture,
  readme: ReadmeNumbers,
  name: string,
  makeBackend: () => AttentionBackend | Promise<AttentionBackend>,
  release: (b: AttentionBackend) => void,
  more?: (get: () => { model: Transformer; backend: AttentionBackend }) => void,
): void {
  let backend: AttentionBackend;
  let model: Transformer;
  beforeAll(async () => {
    backend = await makeBackend();
    model = new Transformer(fixture.checkpoint, backend);
  });
  afterAll(() => release(backend));

  it(`${name}: greedy ${readme.greedyTokens} tokens after "${readme.prompt}" reproduce the README text exactly`, () => {
    const prompt = fixture.tokenizer.encode(readme.prompt, { bos: true });
    const out = generateGreedy(model, prompt, readme.greedyTokens);
    expect(out.length).toBe(readme.greedyTokens);
    expect(fixture.tokenizer.decodeAll([...prompt, ...out])).toBe(readme.greedyText);
  });

  it(`${name}: NLL on the first 2,000 characters is ${readme.nll}`, { timeout: readme.nllTimeoutMs ?? 5_000 }, () => {
    const r = nll(model, fixture.evalIds, 512);
    expect(r.tokens).toBe(readme.ids - 1);
    expect(r.windows).toBe(readme.windows);
    expect(Math.abs(r.nll - readme.nll)).toBeLessThan(1e-3);
  });

  more?.(() => ({ model, backend }));
}

/** Largest logit difference between `backend` and the reference attention over 300 tokens. */
export function maxLogitDiffToReference(fixture: ModelFixture, backend: AttentionBackend): number {
  const ids = fixture.evalIds.slice(0, 300);
  const ref = new Transformer(fixture.checkpoint, new ReferenceAttention(fixture.dims)).prefill(ids, { chunkSize: 64, logits: 'all' });
  const got = new Transformer(fixture.checkpoint, backend).prefill(ids, { chunkSize: 64, logits: 'all' });
  let maxDiff = 0;
  for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - got[i]!));
  return maxDiff;
}
