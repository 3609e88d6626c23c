// Quality guard for the storage formats on the real model: the evaluation protocol of
// `npm run eval` (prefill the first half of each story, score the second half) on the first
// stories of the evaluation text, with bounds just around the measured values, so that a
// regression in quantization, rotation or attention fails here. (That an f32 cache reproduces
// the reference NLL 1.7522 is checked in test/examples.)
import { afterAll, describe, expect, it } from 'vitest';
import * as kv from '../../lib/index';
import { loadCheckpoint } from '../../examples/llama2c/checkpoint';
import { attentionDims } from '../../examples/llama2c/model';
import { Tokenizer } from '../../examples/llama2c/tokenizer';
import { buildMethods } from '../../examples/eval/methods';
import { StoryEvaluator, emptyScore, mergeScore, type Score } from '../../examples/eval/runner';
import { loadStories } from '../../examples/eval/stories';
import { resultRows, type ResultRow } from '../../examples/eval/report';
import { EVAL_TEXT_PATH, MODEL_PATH, TOKENIZER_PATH } from '../../examples/llama2c/paths';

const STORIES = 8;
const checkpoint = loadCheckpoint(MODEL_PATH);
const tokenizer = Tokenizer.load(TOKENIZER_PATH, checkpoint.config.vocabSize);
const stories = loadStories(EVAL_TEXT_PATH, tokenizer, 512, STORIES);
const dims = attentionDims(checkpoint.config);

/**
 * Bounds per method id on the first 8 stories (1,290 scored tokens; one token = 0.078%):
 * [min agreement %, max ΔNLL vs f32 (nats/token), for int4 also a min ΔNLL so that a format
 * silently stored wider is noticed], set 2-4 tokens beyond the values measured (comments).
 */
const BOUNDS: Record<string, { minAgreement: number; maxDeltaNll: number; minDeltaNll?: number }> = {
  f16: { minAgreement: 99.8, maxDeltaNll: 0.0003 }, // 99.92%, +0.0000
  bf16: { minAgreement: 99.2, maxDeltaNll: 0.0006 }, // 99.38%, +0.0002
  'int8-g8': { minAgreement: 98.1, maxDeltaNll: 0.0025 }, // 98.37%, +0.0013
  'int8-g8-rk': { minAgreement: 98.0, maxDeltaNll: 0.0028 }, // 98.29%, +0.0016
  'int8-g4': { minAgreement: 98.7, maxDeltaNll: 0.0028 }, // 98.99%, +0.0017
  'k8v4-g8-rk': { minAgreement: 97.7, maxDeltaNll: 0.005, minDeltaNll: 0.001 }, // 98.06%, +0.0036
  'int4-g8': { minAgreement: 76.0, maxDeltaNll: 0.34, minDeltaNll: 0.2 }, // 77.36%, +0.3137
  'int4-g8-rk': { minAgreement: 77.5, maxDeltaNll: 0.28, minDeltaNll: 0.15 }, // 78.84%, +0.2540
  'int4-g4-rk': { minAgreement: 87.5, maxDeltaNll: 0.08, minDeltaNll: 0.03 }, // 88.84%, +0.0671
};

const { methods } = buildMethods(kv, dims, { keys: 'f16', values: 'f16' }, { groupSizes: [8, 4] });
const selected = methods.filter((m) => m.id === 'f32' || m.id in BOUNDS);
const evaluator = new StoryEvaluator(checkpoint);
afterAll(() => evaluator.dispose());

let rows: ResultRow[] | undefined;
async function results(): Promise<ResultRow[]> {
  if (rows) return rows;
  const totals = new Map<string, Score>(selected.map((m) => [m.id, emptyScore()]));
  for (const ids of stories) {
    for (const [id, s] of await evaluator.evaluateStory(ids, selected)) mergeScore(totals.get(id)!, s);
  }
  rows = resultRows(selected, totals);
  return rows;
}

describe(`storage formats on stories260K, first ${STORIES} stories (second halves scored)`, () => {
  it('evaluates every bounded format without errors', async () => {
    const r = await results();
    expect(stories.length).toBe(STORIES);
    expect(selected.map((m) => m.id).sort()).toEqual(['f32', ...Object.keys(BOUNDS)].sort());
    for (const row of r) expect(row.error, row.id).toBeUndefined();
    const ref = r.find((x) => x.id === 'f32')!;
    expect(ref.agreement).toBe(1);
    expect(ref.tokens).toBeGreaterThan(1000);
    // measured values, for updating the bounds
    console.log(r.map((x) => `${x.id}: agreement ${(100 * x.agreement).toFixed(2)}%, ΔNLL ${(x.nll - ref.nll).toFixed(4)}`).join('\n'));
  });

  // int8 does not reach 99% top-1 agreement on this model: its heads are 8 wide, so every
  // quantization group is a whole head (or half of one) and one scale covers the head's
  // outlier channel. An exact JS simulation of per-row symmetric int8 (absmax / 127, groups of
  // 8) through the reference attention agrees 98.6% on the same tokens; the cache matches that.
  it('int8 stays within 2% of the f32 cache\'s top-1 predictions, and within 1.5% with groups of 4', async () => {
    const r = await results();
    expect(100 * r.find((x) => x.id === 'int8-g8')!.agreement).toBeGreaterThanOrEqual(98);
    expect(100 * r.find((x) => x.id === 'int8-g4')!.agreement).toBeGreaterThanOrEqual(98.5);
  });

  for (const [id, b] of Object.entries(BOUNDS)) {
    it(`${id}: agreement ≥ ${b.minAgreement}%, ΔNLL ≤ ${b.maxDeltaNll}`, async () => {
      const r = await results();
      const ref = r.find((x) => x.id === 'f32')!;
      const row = r.find((x) => x.id === id)!;
      expect(100 * row.agreement).toBeGreaterThanOrEqual(b.minAgreement);
      expect(row.nll - ref.nll).toBeLessThanOrEqual(b.maxDeltaNll);
      expect(row.nll - ref.nll).toBeGreaterThanOrEqual(b.minDeltaNll ?? -0.002);
    });
  }

  it('bytes per token shrink with the format', async () => {
    const r = await results();
    const bpt = (id: string) => r.find((x) => x.id === id)!.bytesPerToken;
    expect(bpt('f16')).toBeLessThan(bpt('f32'));
    expect(bpt('int8-g8')).toBeLessThan(bpt('f16'));
    expect(bpt('int4-g8')).toBeLessThan(bpt('int8-g8'));
    expect(bpt('k8v4-g8-rk')).toBeLessThan(bpt('int8-g8'));
    expect(bpt('k8v4-g8-rk')).toBeGreaterThan(bpt('int4-g8'));
  });
});
