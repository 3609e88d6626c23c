// Real attention streams of stories260K (../shared/models) over windows of the evaluation text,
// for the compaction and eviction quality measurements: per layer the RoPE'd keys, values and
// queries of a prefix, the queries of the tokens that follow it (held out), and two sets of
// reference queries an engine can produce before compacting the prefix:
// - repeat-prefill: the prefix read a second time right after itself;
// - self-study: the model continues the prefix several times (sampled at temperature 1), the
//   way it will continue it after the compaction.
// No vitest imports here: the benchmark loads this file outside the test runner.
import { readFileSync } from 'node:fs';

import { loadCheckpoint } from '../../examples/llama2c/checkpoint';
import type { AttentionDims } from '../../examples/llama2c/model';
import { Transformer, attentionDims } from '../../examples/llama2c/model';
import { EVAL_TEXT_PATH, MODEL_PATH, TOKENIZER_PATH } from '../../examples/llama2c/paths';
import { RecordingAttention, concat } from '../../examples/llama2c/recording-attention';
import { ReferenceAttention } from '../../examples/llama2c/reference-attention';
import { Sampler } from '../../examples/llama2c/sampler';
import { Tokenizer } from '../../examples/llama2c/tokenizer';

export interface StoriesWindow {
  /** Per layer [prefix, kvHeads, headDim] */
  keys: Float32Array[];
  values: Float32Array[];
  /** Per layer [prefix, queryHeads, headDim]: the prefix's own (causal) queries */
  prefixQueries: Float32Array[];
  /** Per layer [heldOut, queryHeads, headDim]: queries of the tokens after the prefix */
  heldOut: Float32Array[];
  /** Per layer [prefix, queryHeads, headDim] */
  repeatQueries: Float32Array[];
  /** Per layer [continuations × length, queryHeads, headDim] */
  selfStudyQueries: Float32Array[];
}

export interface StoriesStreams {
  dims: AttentionDims;
  prefix: number;
  windows: StoriesWindow[];
}

export interface StoriesOptions {
  windows?: number; // default 4
  prefix?: number; // default 256 (the repeat pass needs 2 × prefix ≤ the context of 512)
  heldOut?: number; // default 64
  /** Sampled continuations of the prefix for the self-study queries. Default 8 × 64 tokens. */
  selfStudy?: { continuations: number; length: number; seed: number };
}

export function storiesStreams(options: StoriesOptions = {}): StoriesStreams {
  const P = options.prefix ?? 256, heldOut = options.heldOut ?? 64, count = options.windows ?? 4;
  const study = options.selfStudy ?? { continuations: 8, length: 64, seed: 12345 };
  const checkpoint = loadCheckpoint(MODEL_PATH);
  const tokenizer = Tokenizer.load(TOKENIZER_PATH, checkpoint.config.vocabSize);
  const dims = attentionDims(checkpoint.config);
  if (2 * P > checkpoint.config.seqLen || P + Math.max(heldOut, study.length) > checkpoint.config.seqLen) {
    throw new RangeError(`prefix ${P} too long for the model's context of ${checkpoint.config.seqLen}`);
  }
  const ids = tokenizer.encode(readFileSync(EVAL_TEXT_PATH, 'utf8'), { bos: true });
  const recorder = new RecordingAttention(new ReferenceAttention(dims), dims.layers);
  const model = new Transformer(checkpoint, recorder);
  const { layers, kvHeads: H, headDim: D, queryHeads: QH } = dims;
  const windows: StoriesWindow[] = [];
  const sampler = new Sampler(study.seed);
  for (let w = 0; w < count; w++) {
    const tokens = ids.slice(w * 512, w * 512 + P + heldOut);
    if (tokens.length < P + heldOut) break;
    const prefix = tokens.slice(0, P);
    model.reset();
    model.prefill(tokens, { chunkSize: 64, logits: 'none' });
    const keys = recorder.keys.map((k) => concat(k).slice(0, P * H * D));
    const values = recorder.values.map((v) => concat(v).slice(0, P * H * D));
    const queries = recorder.queries.map(concat);
    const prefixQueries = queries.map((q) => q.slice(0, P * QH * D));
    const held = queries.map((q) => q.slice(P * QH * D));

    model.reset();
    model.prefill(prefix, { chunkSize: 64, logits: 'none' });
    const beforeRepeat = recorder.marks();
    model.prefill(prefix, { chunkSize: 64, logits: 'none' });
    const repeatQueries = recorder.queriesSince(beforeRepeat);

    const selfStudy: Float32Array[][] = Array.from({ length: layers }, () => []);
    for (let c = 0; c < study.continuations; c++) {
      model.reset();
      let logits = model.prefill(prefix, { chunkSize: 64, logits: 'last' });
      const before = recorder.marks();
      for (let i = 0; i < study.length; i++) logits = model.step(sampler.sample(logits));
      recorder.queriesSince(before).forEach((q, l) => selfStudy[l]!.push(q));
    }
    windows.push({
      keys, values, prefixQueries, heldOut: held, repeatQueries,
      selfStudyQueries: selfStudy.map(concat),
    });
  }
  return { dims, prefix: P, windows };
}
