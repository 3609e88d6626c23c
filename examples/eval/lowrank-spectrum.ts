// `npx tsx examples/eval/lowrank-spectrum.ts [--model shakes64] [--stories N]`: how low-rank a
// model's keys and values are. Runs passages through an f32 cache, then for every (layer,
// kv head) stream measures the relative error ||x - B B^T x|| / ||x|| of its rows on bases
// fitted (a) on its first 128 rows, as streaming calibration does, and (b) on all its rows,
// for keys and values separately, at several ranks. Uses the cache's own basis fit
// (setBases / fitBases on a lowRank cache), so it measures exactly what storage would do.
// --pre: keys before RoPE (the cache applies RoPE: what lowRank with rope stores).
import { parseArgs } from 'node:util';
import { KVCache } from '../../lib/index';
import { loadCheckpoint } from '../llama2c/checkpoint';
import { KVCacheAttention } from '../llama2c/kvcache-attention';
import { Transformer, attentionDims } from '../llama2c/model';
import { MODELS, sharedModel } from '../llama2c/paths';
import { Tokenizer } from '../llama2c/tokenizer';
import { MODEL_ROPE } from './rope-methods';
import { loadStories } from './stories';

const o = parseArgs({ options: { model: { type: 'string' }, stories: { type: 'string' }, calibration: { type: 'string' }, pre: { type: 'boolean' } } }).values;
const m = sharedModel(o.model ?? 'shakes64') ?? MODELS.shakes64;
const checkpoint = loadCheckpoint(m.model);
const tokenizer = Tokenizer.load(m.tokenizer, checkpoint.config.vocabSize);
const stories = loadStories(m.passages, tokenizer, 512, Number(o.stories ?? 4));
const dims = attentionDims(checkpoint.config);
const D = dims.headDim;
const C = Number(o.calibration ?? 128);
const ranks = [0.75, 0.625, 0.5, 0.375, 0.25].map((f) => 2 * Math.round((f * D) / 2));

function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += a[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

// [rank][calibrated | all][keys | values] -> sum of relative errors over streams
const sums: number[][][] = ranks.map(() => [[0, 0], [0, 0]]);
let streams = 0;
for (const ids of stories) {
  const backend = new KVCacheAttention(dims, { keys: 'f32', values: 'f32', ...(o.pre ? { rope: MODEL_ROPE } : {}) });
  const model = new Transformer(checkpoint, backend);
  model.prefill(ids, { chunkSize: 64, logits: 'none' });
  for (let l = 0; l < dims.layers; l++) {
    for (let h = 0; h < dims.kvHeads; h++) {
      const rows = backend.sequence.read(l, h);
      const n = rows.positions.length;
      if (n <= C) continue;
      streams++;
      ranks.forEach((r, ri) => {
        for (const [mode, calibration] of [[0, C], [1, 0]] as const) {
          using cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: 'f32', values: 'f32', threads: 1, lowRank: { keys: r, values: r, calibrationRows: calibration } });
          const seq = cache.createSequence();
          seq.append(0, rows.keys, rows.values);
          if (calibration === 0) seq.fitBases();
          const back = seq.read(0, 0);
          const cell = sums[ri]![mode]!;
          cell[0] = cell[0]! + relErr(rows.keys, back.keys);
          cell[1] = cell[1]! + relErr(rows.values, back.values);
        }
      });
    }
  }
  backend.cache.dispose();
}
console.log(`${m.name}: ${streams} streams of up to 512 rows, head_dim ${D}, keys ${o.pre ? 'before' : 'after'} RoPE; mean relative error ||x - BB^T x|| / ||x||\n`);
console.log(`| rank | keys, bases from first ${C} rows | keys, bases from all rows | values, first ${C} rows | values, all rows |`);
console.log('|---:|---:|---:|---:|---:|');
ranks.forEach((r, ri) => {
  const s = sums[ri]!;
  console.log(`| ${r} | ${(s[0]![0]! / streams).toFixed(4)} | ${(s[1]![0]! / streams).toFixed(4)} | ${(s[0]![1]! / streams).toFixed(4)} | ${(s[1]![1]! / streams).toFixed(4)} |`);
});
