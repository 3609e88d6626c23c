// Attention Matching against eviction on real stories260K streams (stories-streams.ts: 4 windows
// of the evaluation text, prefix 256 rows, 64 held-out queries, 5 layers × 4 kv heads × 8).
// Held-out relative attention-output error over the prefix at keep ratio 0.1, through the
// public API. Reference queries for AM: self-study (8 sampled continuations of 64 tokens),
// the flow documented on Compactor. Every eviction policy runs with two protections (4 sinks
// + 16 recent, and 1 sink) and the best of all of them is the baseline. Bounds sit just above
// the values measured with `npx tsx bench/eviction.bench.ts --part quality --streams stories`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Compactor, EvictionPolicy, KVCache, type EvictionBudget, type Sequence } from '../../lib/index';
import { storiesStreams, type StoriesStreams } from './stories-streams';

const RATIO = 0.1;
let streams: StoriesStreams;
let cache: KVCache;
let bases: Sequence[];
let fullOutputs: Float32Array[][];

function heldOutOutputs(seq: Sequence, w: number): Float32Array[] {
  const { layers, queryHeads: QH, headDim: D } = streams.dims;
  const out: Float32Array[] = [];
  for (let l = 0; l < layers; l++) {
    const q = streams.windows[w]!.heldOut[l]!;
    for (let i = 0; i < q.length / (QH * D); i++) out.push(seq.attention(l, q.subarray(i * QH * D, (i + 1) * QH * D)));
  }
  return out;
}

/** ‖O − O_full‖ / ‖O_full‖ over every window, layer and held-out query. */
function heldOutError(shrink: (seq: Sequence, w: number) => void): number {
  let num = 0, den = 0;
  bases.forEach((base, w) => {
    const fork = base.fork();
    shrink(fork, w);
    heldOutOutputs(fork, w).forEach((o, i) => {
      const ref = fullOutputs[w]![i]!;
      for (let j = 0; j < o.length; j++) { num += (o[j]! - ref[j]!) ** 2; den += ref[j]! ** 2; }
    });
    fork.free();
  });
  return Math.sqrt(num / den);
}

beforeAll(() => {
  streams = storiesStreams();
  const { layers, kvHeads: H, headDim: D, queryHeads: QH } = streams.dims;
  cache = new KVCache({ layers, kvHeads: H, headDim: D, queryHeads: QH, keys: 'f32', values: 'f32', threads: 1 });
  bases = streams.windows.map((win) => {
    const seq = cache.createSequence();
    for (let l = 0; l < layers; l++) {
      // The prefix's causal attention, in chunks of 64, feeds the scores of the policies.
      for (let t = 0; t < streams.prefix; t += 64) {
        seq.append(l, win.keys[l]!.subarray(t * H * D, (t + 64) * H * D), win.values[l]!.subarray(t * H * D, (t + 64) * H * D));
        seq.attention(l, win.prefixQueries[l]!.subarray(t * QH * D, (t + 64) * QH * D), { accumulateScores: true, recordQueries: true });
      }
    }
    return seq;
  });
  fullOutputs = bases.map((b, w) => heldOutOutputs(b, w));
}, 120_000);

afterAll(() => cache.dispose());

describe('Attention Matching on real stories260K streams, keep 10%', () => {
  const budget: EvictionBudget = { ratio: RATIO };
  let bestEviction = Infinity;

  it('measures every eviction policy with both protections', () => {
    const errors: Record<string, number> = {};
    for (const protect of [{ sinks: 4, recent: 16 }, { sinks: 1, recent: 0 }]) {
      const policies: Record<string, EvictionPolicy> = {
        slidingWindow: EvictionPolicy.slidingWindow({ window: 0 }),
        streamingLLM: EvictionPolicy.streamingLLM({ sinks: protect.sinks, window: 0 }),
        h2o: EvictionPolicy.h2o(protect),
        snapKV: EvictionPolicy.snapKV({ window: 16, pool: 7, sinks: protect.sinks }),
        tova: EvictionPolicy.tova(protect),
        keyNorm: EvictionPolicy.keyNorm(protect),
        random: EvictionPolicy.random(1, protect),
      };
      for (const [name, policy] of Object.entries(policies)) {
        errors[`${name} ${JSON.stringify(protect)}`] = heldOutError((seq) => { seq.evict(policy, budget); });
      }
    }
    bestEviction = Math.min(...Object.values(errors));
    console.log('eviction at 0.1:', Object.entries(errors).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', '));
    // measured: tova with 1 sink 0.6095 is the best
    expect(bestEviction).toBeGreaterThan(0.55);
    expect(bestEviction).toBeLessThan(0.65);
  });

  // measured 0.1917 (highest-attention) and 0.1807 (omp)
  const BOUNDS = { 'highest-attention': 0.2, omp: 0.19 } as const;
  for (const method of ['highest-attention', 'omp'] as const) {
    it(`${method} with self-study queries is at least 3x better than the best policy`, () => {
      const err = heldOutError((seq, w) => {
        const report = new Compactor({ method, ratio: RATIO, protect: { sinks: 1, recent: 0 }, queries: streams.windows[w]!.selfStudyQueries }).compactSync(seq);
        expect(report.streams.every((s) => s.querySource === 'given' && s.queries === 8 * 64 * 2)).toBe(true);
      });
      console.log(`AM ${method}, self-study queries, keep 0.1: held-out ${err.toFixed(4)} (best eviction ${bestEviction.toFixed(4)}, ${(bestEviction / err).toFixed(2)}x)`);
      expect(err).toBeLessThan(BOUNDS[method]);
      expect(bestEviction / err).toBeGreaterThanOrEqual(3);
    });
  }

  it('the default recorded queries (prefill reservoir) do not reach that: self-study is what matters here', () => {
    const err = heldOutError((seq) => { new Compactor({ method: 'omp', ratio: RATIO, protect: { sinks: 1, recent: 0 } }).compactSync(seq); });
    // measured 0.6556: the prefill's causal queries say little about the next tokens' queries
    expect(err).toBeGreaterThan(0.5);
    expect(err).toBeLessThan(0.7);
  });
});
