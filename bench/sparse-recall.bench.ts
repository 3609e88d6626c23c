// `npx tsx bench/sparse-recall.bench.ts`: recall of sparse decode on the real models' own
// attention. stories260K and shakes64 (examples/llama2c) decode their evaluation text one token
// at a time over a kvcompact cache with key summaries; at every decode step with at least
// --min-tokens rows, every layer's dense attention records the attention mass of each row
// (accumulateScores, summed over the query heads of a kv head), and for budgets of 1/8 and 1/4
// of the rows the bench compares
//   - bound:  the share of that mass inside the blocks sparse decode picks (sparseSelection:
//             sinks and recent window forced, the rest by the summaries' logit bounds), and
//   - oracle: the share inside the same number of blocks chosen knowing the mass (the blocks
//             holding the most of it): the best any block selection of that size could do.
// "top rows" is the share of the mass in the top 1/8 (1/4) of the rows, blocks ignored: how
// concentrated the heads are.
// Flags: --windows 2 (windows of 512 tokens per model)  --block-size 8  --min-tokens 128  --json FILE
import { readFileSync } from 'node:fs';

import { positiveInt } from '../examples/shared/cli';
import { loadCheckpoint } from '../examples/llama2c/checkpoint';
import { KVCacheAttention } from '../examples/llama2c/kvcache-attention';
import { attentionDims, type AttentionBackend, type AttentionDims, Transformer } from '../examples/llama2c/model';
import { MODELS } from '../examples/llama2c/paths';
import { Tokenizer } from '../examples/llama2c/tokenizer';
import { checkedArgs, markdownTable, parseBenchArgs, progress, writeJson } from './support/bench-utils';

const args = parseBenchArgs({
  command: 'npx tsx bench/sparse-recall.bench.ts',
  summary: 'Recall of sparse decode (bound-based block choice vs the oracle choice) on the attention of stories260K and shakes64.',
  options: {
    windows: { type: 'string', value: 'N', description: 'windows of 512 tokens per model (default 2; --quick 1)' },
    'block-size': { type: 'string', value: 'N', description: 'cache blockSize (default 8)' },
    'min-tokens': { type: 'string', value: 'N', description: 'measure decode steps with at least N rows (default 128)' },
  },
});
const { windows, blockSize, minTokens } = checkedArgs(() => ({
  windows: positiveInt('windows', args.values.windows, args.quick ? 1 : 2),
  blockSize: positiveInt('block-size', args.values['block-size'], 8),
  minTokens: positiveInt('min-tokens', args.values['min-tokens'], 128),
}));
const WINDOW = 512;
const FRACTIONS = [1 / 8, 1 / 4];
// Forced blocks, scaled to 512-token contexts: the first rows (attention sinks) and the newest.
const RULE = { sinks: 4, recent: 16 };

interface Tally {
  bound: number[];
  oracle: number[];
  topRows: number[];
}

/** A KVCache backend that, on every decode step, measures the recall of the block selections. */
class RecallProbe implements AttentionBackend {
  readonly inner: KVCacheAttention;
  readonly tallies: Tally[] = FRACTIONS.map(() => ({ bound: [], oracle: [], topRows: [] }));

  constructor(readonly dims: AttentionDims) {
    this.inner = new KVCacheAttention(dims, { keys: 'f32', values: 'f32', keySummaries: true, blockSize, groupSize: Math.min(32, dims.headDim) });
  }

  append(layer: number, keys: Float32Array, values: Float32Array, startPos: number): void {
    this.inner.append(layer, keys, values, startPos);
  }

  attention(layer: number, queries: Float32Array, tq: number): Float32Array {
    const seq = this.inner.sequence;
    if (tq !== 1) return this.inner.attention(layer, queries, tq);
    seq.resetScores();
    const out = seq.attention(layer, queries, { accumulateScores: true });
    const T = seq.scores(layer, 0).length;
    if (T < minTokens) return out;
    FRACTIONS.forEach((f, i) => {
      const sel = seq.sparseSelection(layer, queries, { tokens: Math.max(1, Math.round(T * f)), ...RULE });
      for (let h = 0; h < this.dims.kvHeads; h++) this.measure(seq.scores(layer, h), sel[h]!.blocks, f, this.tallies[i]!);
    });
    return out;
  }

  private measure(scores: Float32Array, picked: Int32Array, f: number, t: Tally): void {
    let total = 0;
    for (const s of scores) total += s;
    const mass = new Float64Array(Math.ceil(scores.length / blockSize));
    for (let r = 0; r < scores.length; r++) mass[Math.floor(r / blockSize)]! += scores[r]!;
    let inside = 0;
    for (const b of picked) inside += mass[b]!;
    const best = Array.from(mass).sort((a, b) => b - a).slice(0, picked.length).reduce((a, b) => a + b, 0);
    const rows = Array.from(scores).sort((a, b) => b - a).slice(0, Math.round(scores.length * f)).reduce((a, b) => a + b, 0);
    t.bound.push(inside / total);
    t.oracle.push(best / total);
    t.topRows.push(rows / total);
  }

  reset(): void {
    this.inner.reset();
  }

  dispose(): void {
    this.inner.dispose();
  }
}

const mean = (x: number[]): number => x.reduce((a, b) => a + b, 0) / x.length;
const quantile = (x: number[], p: number): number => {
  const s = [...x].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};

interface Row {
  model: string;
  budget: string;
  samples: number;
  boundMean: number;
  boundP10: number;
  oracleMean: number;
  oracleP10: number;
  boundOverOracle: number;
  topRows: number;
}

function main(): void {
  const rows: Row[] = [];
  for (const m of [MODELS.stories260K, MODELS.shakes64]) {
    const checkpoint = loadCheckpoint(m.model);
    const tokenizer = Tokenizer.load(m.tokenizer, checkpoint.config.vocabSize);
    const ids = tokenizer.encode(readFileSync(m.evalText, 'utf8'));
    const probe = new RecallProbe(attentionDims(checkpoint.config));
    const model = new Transformer(checkpoint, probe);
    for (let w = 0; w < windows && (w + 1) * WINDOW <= ids.length; w++) {
      progress(`${m.name}: window ${w + 1}/${windows}...`);
      model.reset();
      for (const id of ids.slice(w * WINDOW, (w + 1) * WINDOW)) model.step(id);
    }
    FRACTIONS.forEach((f, i) => {
      const t = probe.tallies[i]!;
      rows.push({ model: m.name, budget: `1/${1 / f}`, samples: t.bound.length, boundMean: mean(t.bound), boundP10: quantile(t.bound, 0.1),
        oracleMean: mean(t.oracle), oracleP10: quantile(t.oracle, 0.1), boundOverOracle: mean(t.bound) / mean(t.oracle), topRows: mean(t.topRows) });
    });
    probe.dispose();
  }
  console.log(`\nRecall of sparse decode on the models' attention: ${windows} window(s) of ${WINDOW} tokens per model, decode steps with ` +
    `>= ${minTokens} rows, every layer × kv head; blockSize ${blockSize}, sinks ${RULE.sinks}, recent ${RULE.recent}\n`);
  console.log(markdownTable(['model', 'budget', 'samples', 'bound recall mean', 'bound p10', 'oracle mean', 'oracle p10', 'bound / oracle', 'top rows (no blocks)'],
    rows.map((r) => [r.model, r.budget, r.samples, r.boundMean.toFixed(4), r.boundP10.toFixed(4), r.oracleMean.toFixed(4), r.oracleP10.toFixed(4),
      r.boundOverOracle.toFixed(3), r.topRows.toFixed(4)])));
  writeJson(args.json, { windows, blockSize, minTokens, rule: RULE, rows });
}

main();
