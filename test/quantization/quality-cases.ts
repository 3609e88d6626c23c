// The quantization quality measurements behind quality.test.ts and the table of
// docs/quantization-results.md: relative attention-output error ‖out − ref‖ / ‖ref‖ of a
// quantized cache against a float64 reference on the UNQUANTIZED rows, on three kinds of
// data, all seeded (fixed seeds, so the table and the bounds are reproducible):
//   gaussian   N(0, 1) keys, values and queries: T = 512, 2 kv heads, GQA 4, head_dim 128, Tq = 4
//   synthetic  bench/support/synthetic-streams.ts defaults (outlier key channels, sink, local
//              attention): T = 2048, 2 kv heads, GQA 4, head_dim 128, Tq = 4
//   stories    real RoPE'd keys / values / queries of stories260K (examples/llama2c) over the
//              first 320 tokens of ../shared/data/tinystories_sample.txt: 5 layers, 4 kv heads,
//              8 query heads, head_dim 8 (so groupSize 8), causal attention of all 320 queries
import { readFileSync } from 'node:fs';
import { KVCache } from '../../lib/index';
import type { Storage } from '../../lib/types';
import { gaussianKV, gaussianQueries, headRows, syntheticKV, syntheticQueries } from '../../bench/support/synthetic-streams';
import { loadCheckpoint } from '../../examples/llama2c/checkpoint';
import { attentionDims, Transformer } from '../../examples/llama2c/model';
import { RecordingAttention, concat } from '../../examples/llama2c/recording-attention';
import { ReferenceAttention } from '../../examples/llama2c/reference-attention';
import { Tokenizer } from '../../examples/llama2c/tokenizer';
import { attentionReference } from '../reference/attention-reference';
import { MODEL_PATH, SAMPLE_TEXT_PATH, TOKENIZER_PATH } from '../../examples/llama2c/paths';
import { relError } from '../reference/errors';

/** One layer's worth of attention inputs, token-major. */
export interface LayerData {
  keys: Float32Array; // [T, kvHeads, D]
  values: Float32Array; // [T, kvHeads, D]
  queries: Float32Array; // [Tq, queryHeads, D] for the last Tq positions
}

export interface Dataset {
  name: 'gaussian' | 'synthetic' | 'stories';
  kvHeads: number;
  queryHeads: number;
  headDim: number;
  groupSizes: number[];
  layers: LayerData[];
  reference: Float64Array[]; // per layer, attention on the unquantized rows
}

export interface QualityConfig {
  keys: Storage;
  values: Storage;
  groupSize: number;
  rotate: boolean; // keys rotated (values never, here)
}

export function configName(c: QualityConfig): string {
  return `K ${c.keys} / V ${c.values}, G${c.groupSize}${c.rotate ? ', rotated' : ''}`;
}

function withReference(d: Omit<Dataset, 'reference'>): Dataset {
  const reference = d.layers.map((l) => attentionReference({
    headDim: d.headDim, queryHeads: d.queryHeads, queries: l.queries,
    streams: Array.from({ length: d.kvHeads }, (_, h) => {
      const keys = headRows(l.keys, d.kvHeads, d.headDim, h);
      return { keys, values: headRows(l.values, d.kvHeads, d.headDim, h), positions: Array.from({ length: keys.length / d.headDim }, (_, i) => i) };
    }),
  }).out);
  return { ...d, reference };
}

export function gaussianDataset(): Dataset {
  const shape = { tokens: 512, kvHeads: 2, headDim: 128, queryHeads: 8 };
  const { keys, values } = gaussianKV(shape, 11);
  return withReference({ name: 'gaussian', kvHeads: 2, queryHeads: 8, headDim: 128, groupSizes: [32, 64, 128],
    layers: [{ keys, values, queries: gaussianQueries(4, 8, 128, 12) }] });
}

export function syntheticDataset(): Dataset {
  const s = syntheticKV({ tokens: 2048, kvHeads: 2, headDim: 128, queryHeads: 8 }, 21);
  return withReference({ name: 'synthetic', kvHeads: 2, queryHeads: 8, headDim: 128, groupSizes: [32, 64, 128],
    layers: [{ keys: s.keys, values: s.values, queries: syntheticQueries(s, 4, 22) }] });
}


export const STORIES_TOKENS = 320;

export function storiesDataset(): Dataset {
  const checkpoint = loadCheckpoint(MODEL_PATH);
  const tokenizer = Tokenizer.load(TOKENIZER_PATH, checkpoint.config.vocabSize);
  const text = readFileSync(SAMPLE_TEXT_PATH, 'utf8');
  const ids = tokenizer.encode(text, { bos: true }).slice(0, STORIES_TOKENS);
  const dims = attentionDims(checkpoint.config);
  const rec = new RecordingAttention(new ReferenceAttention(dims), dims.layers);
  new Transformer(checkpoint, rec).prefill(ids, { chunkSize: 64, logits: 'none' });
  const layers = Array.from({ length: dims.layers }, (_, l) => ({
    keys: concat(rec.keys[l]!), values: concat(rec.values[l]!), queries: concat(rec.queries[l]!),
  }));
  return withReference({ name: 'stories', kvHeads: dims.kvHeads, queryHeads: dims.queryHeads, headDim: dims.headDim,
    groupSizes: [8], layers });
}

/** ‖out − ref‖ / ‖ref‖ over all layers, query tokens and heads of the dataset. */
export function measure(d: Dataset, c: QualityConfig): number {
  const cache = new KVCache({
    layers: d.layers.length, kvHeads: d.kvHeads, queryHeads: d.queryHeads, headDim: d.headDim,
    keys: c.keys, values: c.values, groupSize: c.groupSize, rotate: c.rotate, threads: 1,
  });
  try {
    const seq = cache.createSequence();
    const outs: Float32Array[] = [];
    d.layers.forEach((l, i) => {
      seq.append(i, l.keys, l.values);
      outs.push(seq.attention(i, l.queries));
    });
    return relError(concat(outs), concatF64(d.reference));
  } finally {
    cache.dispose();
  }
}

function concatF64(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The configurations of the table: both tensors quantized alike, then keys alone, then values alone. */
export function qualityConfigs(d: Dataset): QualityConfig[] {
  const out: QualityConfig[] = [];
  for (const f of ['int8', 'int4'] as const) {
    for (const groupSize of d.groupSizes) {
      for (const rotate of [false, true]) out.push({ keys: f, values: f, groupSize, rotate });
    }
  }
  for (const f of ['int8', 'int4'] as const) {
    for (const groupSize of d.groupSizes) {
      for (const rotate of [false, true]) out.push({ keys: f, values: 'f32', groupSize, rotate });
    }
    for (const groupSize of d.groupSizes) out.push({ keys: 'f32', values: f, groupSize, rotate: false });
  }
  out.push({ keys: 'f16', values: 'f16', groupSize: d.groupSizes[0]!, rotate: false }); // the unquantized default, for scale
  return out;
}
