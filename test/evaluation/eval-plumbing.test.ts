// The evaluation's plumbing for eviction and compaction methods (shared prefix, fork,
// transform, scoring at the right positions), exercised with small stand-ins for
// EvictionPolicy and Compactor built from public Sequence operations (read, truncate,
// append), so it runs whether or not the library exports the real ones.
import { describe, expect, it } from 'vitest';
import * as kv from '../../lib/index';
import { Sequence } from '../../lib/index';
import { loadCheckpoint } from '../../examples/llama2c/checkpoint';
import { attentionDims } from '../../examples/llama2c/model';
import { Tokenizer } from '../../examples/llama2c/tokenizer';
import { buildMethods } from '../../examples/eval/methods';
import { StoryEvaluator, emptyScore, mergeScore, type Score } from '../../examples/eval/runner';
import { loadStories, prefixLength, splitStories } from '../../examples/eval/stories';
import { qualitySvg } from '../../examples/eval/chart';
import { markdownTable, resultRows } from '../../examples/eval/report';
import { EVAL_TEXT_PATH, MODEL_PATH, TOKENIZER_PATH } from '../../examples/llama2c/paths';

const checkpoint = loadCheckpoint(MODEL_PATH);
const tokenizer = Tokenizer.load(TOKENIZER_PATH, checkpoint.config.vocabSize);
const dims = attentionDims(checkpoint.config);
const stories = loadStories(EVAL_TEXT_PATH, tokenizer, 512, 2);

/** Keeps, in every stream of every layer, the rows at `keep(positions)`; rebuilds the sequence in place. */
function keepRows(seq: Sequence, choose: (positions: Int32Array, count: number) => number[], ratio: number): void {
  const c = seq.cache.config;
  const rebuilt: { keys: Float32Array; values: Float32Array; positions: Int32Array }[] = [];
  for (let l = 0; l < c.layers; l++) {
    const heads = Array.from({ length: c.kvHeads }, (_, h) => seq.read(l, h));
    const positions = heads[0]!.positions;
    const keep = choose(positions, Math.max(1, Math.round(ratio * positions.length))).sort((a, b) => a - b);
    const keys = new Float32Array(keep.length * c.kvHeads * c.headDim);
    const values = new Float32Array(keys.length);
    keep.forEach((row, i) => {
      heads.forEach((r, h) => {
        keys.set(r.keys.subarray(row * c.headDim, (row + 1) * c.headDim), (i * c.kvHeads + h) * c.headDim);
        values.set(r.values.subarray(row * c.headDim, (row + 1) * c.headDim), (i * c.kvHeads + h) * c.headDim);
      });
    });
    rebuilt.push({ keys, values, positions: Int32Array.from(keep, (row) => positions[row]!) });
  }
  seq.truncate(0);
  rebuilt.forEach((r, l) => seq.append(l, r.keys, r.values, { positions: r.positions }));
}

const recent = (positions: Int32Array, n: number): number[] => Array.from({ length: n }, (_, i) => positions.length - n + i);

class StandInPolicy {
  constructor(readonly kind: 'recent' | 'sinks+recent') {}
  choose(positions: Int32Array, n: number): number[] {
    if (this.kind === 'recent' || n < 2) return recent(positions, n);
    return [0, ...recent(positions, n - 1)];
  }
}

// Sequence.evict for the stand-in policies (the real method, when there is one, handles the rest).
const proto = Sequence.prototype as unknown as Record<string, unknown>;
const realEvict = proto['evict'] as ((this: Sequence, ...a: unknown[]) => unknown) | undefined;
proto['evict'] = function (this: Sequence, policy: unknown, options: { ratio: number }) {
  if (policy instanceof StandInPolicy) return keepRows(this, (p, n) => policy.choose(p, n), options.ratio);
  if (!realEvict) throw new Error('no evict');
  return realEvict.call(this, policy, options);
};

const lib = {
  ...kv,
  EvictionPolicy: {
    slidingWindow: () => new StandInPolicy('recent'),
    streamingLLM: () => new StandInPolicy('sinks+recent'),
  },
  Compactor: class {
    constructor(readonly options: { ratio: number }) {}
    async compact(seq: Sequence): Promise<object> {
      keepRows(seq, (p, n) => [0, ...recent(p, n - 1)], this.options.ratio);
      return {};
    }
  },
};

describe('evaluation plumbing with stand-in eviction and compaction', () => {
  it('splits the evaluation text into stories', () => {
    expect(splitStories('a\nb\n<|endoftext|>\nc\n<|endoftext|>\n')).toEqual(['a\nb', 'c']);
    expect(stories.length).toBe(2);
    expect(prefixLength(stories[0]!)).toBe(Math.floor(stories[0]!.length / 2));
  });

  it('registers methods from the exports, and eviction at keep 100% reproduces the base storage', async () => {
    const base = { keys: 'f16', values: 'f16' } as const;
    const set = buildMethods(lib, dims, base, { groupSizes: [8], evictionRatios: [1, 0.5], compactionRatios: [0.25], onlineBudgets: [48],
      capabilities: { accumulateScores: false, recordQueries: false } });
    const ids = set.methods.map((m) => m.id);
    expect(ids).toEqual(expect.arrayContaining(['f32', 'f16', 'evict-slidingWindow-1', 'evict-streamingLLM-0.5', 'am-omp-repeat-0.25', 'am-online-48']));
    // the real library's own policies are not in the stand-in: only those two policies register
    expect(ids.some((id) => id.startsWith('evict-h2o'))).toBe(false);
    const methods = set.methods.filter((m) => /^(f32|f16|evict-|am-highest-attention-(prefill|repeat|self-study)-|am-online)/.test(m.id));

    const ev = new StoryEvaluator(checkpoint, { base });
    const totals = new Map<string, Score>(methods.map((m) => [m.id, emptyScore()]));
    try {
      for (const story of stories) {
        const scores = await ev.evaluateStory(story, methods);
        for (const [id, s] of scores) mergeScore(totals.get(id)!, s);
      }
    } finally {
      ev.dispose();
    }
    const rows = resultRows(methods, totals);
    const row = (id: string) => rows.find((r) => r.id === id)!;
    for (const r of rows) expect(r.error, r.id).toBeUndefined();
    const scored = stories.reduce((a, s) => a + s.length - 1 - prefixLength(s), 0);
    expect(row('f32').tokens).toBe(scored);
    expect(row('f32').agreement).toBe(1);

    // keep 100%: fork + rebuild + seek + scoring give exactly the f16 cache's predictions
    expect(row('evict-slidingWindow-1').kept).toBeCloseTo(1, 10);
    expect(row('evict-slidingWindow-1').nll).toBeCloseTo(row('f16').nll, 4);
    expect(row('evict-slidingWindow-1').agreement).toBe(row('f16').agreement);
    // keep 50%: half the rows, half the bytes, and a worse NLL
    expect(row('evict-slidingWindow-0.5').kept).toBeGreaterThan(0.45);
    expect(row('evict-slidingWindow-0.5').kept).toBeLessThan(0.55);
    expect(row('evict-slidingWindow-0.5').bytesPerToken).toBeCloseTo(row('f16').bytesPerToken * row('evict-slidingWindow-0.5').kept, 6);
    expect(row('evict-slidingWindow-0.5').nll).toBeGreaterThan(row('f16').nll);
    // repeat-prefill leaves the cache as it was before compaction: same result as prefill queries for the stand-in
    expect(row('am-highest-attention-repeat-0.25').nll).toBeCloseTo(row('am-highest-attention-prefill-0.25').nll, 4);
    // so does self-study (its continuations are rolled back, the prefix's last row recomputed)
    expect(row('am-highest-attention-self-study-0.25').nll).toBeCloseTo(row('am-highest-attention-prefill-0.25').nll, 4);
    expect(row('am-highest-attention-self-study-0.25').agreement).toBe(row('am-highest-attention-prefill-0.25').agreement);
    expect(row('am-highest-attention-prefill-0.25').kept).toBeLessThan(0.3);
    // online: bounded rows
    expect(row('am-online-48').kept).toBeLessThan(1);
    expect(row('am-online-48').tokens).toBe(scored);

    expect(markdownTable(rows)).toContain('| f16 | storage |');
    const svg = await qualitySvg(rows, 'test');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('slidingWindow');
    expect(svg).not.toContain('NaN');
  });
});
