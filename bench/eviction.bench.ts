// Eviction benchmarks and quality (docs/eviction-results.md):
//   scores   cost of accumulateScores on decode attention, 16K tokens, 8 kv heads × 128, GQA 4, f16, 1 thread
//   evict    evicting 75% of a 16K-token Llama-3-8B-shaped sequence (32 × 8 × 128, int8 keys/values)
//   quality  relative attention-output error on held-out queries after keeping 50/25/10%, per
//            policy, on synthetic LLM-like streams and on real stories260K streams
// Run: npx tsx bench/eviction.bench.ts [--part scores|evict|quality] [--streams synthetic|stories] [--quick] [--json out.json]
import { writeFileSync } from 'node:fs';

import { Compactor, EvictionPolicy, KVCache, type EvictionBudget, type Sequence } from '../lib/index';
import { storiesStreams } from '../test/compactor/stories-streams';
import { syntheticStreams } from '../test/eviction/synthetic';
import { parseBenchArgs } from './support/bench-utils';

const args = parseBenchArgs({
  command: 'npx tsx bench/eviction.bench.ts',
  summary: 'Eviction: the cost of accumulateScores, evicting 75% of a Llama-3-8B-shaped sequence, and attention error per policy.',
  options: {
    part: { type: 'string', choices: ['all', 'scores', 'evict', 'quality'], description: 'one part only (default all)' },
    streams: { type: 'string', choices: ['synthetic', 'stories'], description: 'quality: one kind of streams only' },
  },
});
const part = args.values.part ?? 'all';
const results: Record<string, unknown> = {};

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function randomFill(n: number, seed: number): Float32Array {
  // xorshift: fast enough for hundreds of millions of values
  let x = seed >>> 0 || 1;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    a[i] = (x / 4294967296 - 0.5) * 3.4;
  }
  return a;
}

// ---- 1. cost of accumulateScores -----------------------------------------------------------

function benchScores(): void {
  const T = 16384, H = 8, D = 128, QH = 32;
  const cache = new KVCache({ layers: 1, kvHeads: H, headDim: D, queryHeads: QH, keys: 'f16', values: 'f16', threads: 1 });
  const seq = cache.createSequence();
  const rows = randomFill(1024 * H * D, 7);
  for (let t = 0; t < T; t += 1024) seq.append(0, rows, rows);
  const q = randomFill(QH * D, 9);
  const out = new Float32Array(QH * D);
  const plain = () => seq.attention(0, q, { out });
  const scored = () => seq.attention(0, q, { out, accumulateScores: true });
  for (let i = 0; i < 20; i++) { plain(); scored(); }
  const runs = args.quick ? 60 : 400;
  const a: number[] = [], b: number[] = [], ratios: number[] = [];
  for (let i = 0; i < runs; i++) {
    // interleaved, alternating which goes first
    const first = i % 2 === 0 ? plain : scored;
    const second = i % 2 === 0 ? scored : plain;
    const t0 = performance.now(); first(); const t1 = performance.now(); second(); const t2 = performance.now();
    const [tp, ts] = i % 2 === 0 ? [t1 - t0, t2 - t1] : [t2 - t1, t1 - t0];
    a.push(tp); b.push(ts); ratios.push(ts / tp);
  }
  const mp = median(a), ms = median(b);
  const bytes = T * H * D * 2 * 2;
  const r = {
    tokens: T, kvHeads: H, headDim: D, queryHeads: QH, storage: 'f16', threads: 1, runs,
    plainMs: mp, accumulateMs: ms, overhead: ms / mp - 1, medianPairRatio: median(ratios) - 1,
    plainGBs: bytes / (mp / 1e3) / 1e9,
  };
  console.log('accumulateScores cost:', r);
  results['scores'] = r;
  cache.dispose();
}

// ---- 2. evict 75% at the Llama-3-8B shape --------------------------------------------------

function benchEvict(): void {
  const L = 32, H = 8, D = 128, QH = 32, T = args.quick ? 4096 : 16384;
  const options = { layers: L, kvHeads: H, headDim: D, queryHeads: QH, keys: 'int8', values: 'int8', recentQueries: 64 } as const;
  const bpt = KVCache.bytesPerToken(options);
  const cache = new KVCache({ ...options, maxBytes: Math.ceil(bpt * T * 1.4) });
  const chunk = 1024;
  const rows = randomFill(chunk * H * D, 11);
  const vals = randomFill(chunk * H * D, 12);
  const q = randomFill(2 * QH * D, 13);
  const fill = (): Sequence => {
    const seq = cache.createSequence();
    for (let l = 0; l < L; l++) {
      for (let t = 0; t < T; t += chunk) seq.append(l, rows, vals);
      seq.attention(l, q, { accumulateScores: true, recordQueries: true });
    }
    return seq;
  };
  const cases: [string, EvictionPolicy, EvictionBudget][] = [
    ['slidingWindow', EvictionPolicy.slidingWindow({ window: 0 }), { ratio: 0.25 }],
    ['h2o', EvictionPolicy.h2o(), { ratio: 0.25 }],
    ['h2o adaptive', EvictionPolicy.h2o(), { ratio: 0.25, perHead: 'adaptive' }],
    ['h2o pyramid', EvictionPolicy.h2o(), { ratio: 0.25, schedule: 'pyramid' }],
    ['random', EvictionPolicy.random(1), { ratio: 0.25 }],
    ['keyNorm', EvictionPolicy.keyNorm(), { ratio: 0.25 }],
    ['tova', EvictionPolicy.tova(), { ratio: 0.25 }],
    ['snapKV (window 8)', EvictionPolicy.snapKV({ window: 8 }), { ratio: 0.25 }],
  ];
  const out: Record<string, unknown>[] = [];
  for (const [name, policy, budget] of args.quick ? cases.slice(0, 3) : cases) {
    const tf = performance.now();
    const seq = fill();
    const fillMs = performance.now() - tf;
    const before = cache.stats();
    const r = seq.evict(policy, budget);
    const after = cache.stats();
    const row = {
      policy: name, budget: JSON.stringify(budget), tokens: T, fillMs: Math.round(fillMs),
      evictMs: r.milliseconds, bytesBefore: before.bytesUsed, bytesAfter: after.bytesUsed, bytesFreed: r.bytesFreed,
      blocksFreed: r.blocksFreed, rowsBefore: r.rowsBefore, rowsAfter: r.rowsAfter,
    };
    console.log(row);
    out.push(row);
    seq.free();
  }
  // Evicting a fork (its blocks all shared): the kept rows are copied into fresh blocks.
  {
    const seq = fill();
    const fork = seq.fork();
    const r = fork.evict(EvictionPolicy.h2o(), { ratio: 0.25 });
    const row = { policy: 'h2o on a fork (copy-on-write)', budget: '{"ratio":0.25}', tokens: T, evictMs: r.milliseconds, bytesFreed: r.bytesFreed, blocksFreed: r.blocksFreed, rowsAfter: r.rowsAfter };
    console.log(row);
    out.push(row);
    fork.free();
    seq.free();
  }
  results['evict'] = out;
  cache.dispose();
}

// ---- 3. quality ------------------------------------------------------------------------------

/** One way of shrinking a sequence to a keep ratio: an eviction policy or Attention Matching. */
interface Method {
  name: string;
  apply: (seq: Sequence, ratio: number, c: QualityCase) => void;
  /** Runs only on cases that carry these reference queries (real-model streams). */
  needsReferenceQueries?: ReferenceSource;
}

/** Reference queries an engine produces before compacting (see test/compactor/stories-streams.ts). */
type ReferenceSource = 'repeat-prefill' | 'self-study';

function evict(name: string, policy: EvictionPolicy, budget: (ratio: number) => EvictionBudget): Method {
  return { name, apply: (seq, ratio) => seq.evict(policy, budget(ratio)) };
}

function methods(protect: { sinks: number; recent: number }, window: number, suffix = ''): Method[] {
  const ratio = (r: number): EvictionBudget => ({ ratio: r });
  const adaptive = (r: number): EvictionBudget => ({ ratio: r, perHead: 'adaptive' });
  type AmMethod = 'highest-attention' | 'omp';
  const attentionMatching = (method: AmMethod): Method => ({
    name: `AM ${method}, prefill reservoir${suffix}`,
    // Reference queries: the reservoir recorded during the prefill (the default).
    apply: (seq, r) => { new Compactor({ method, ratio: r, protect }).compactSync(seq); },
  });
  const attentionMatchingWith = (method: AmMethod, source: ReferenceSource): Method => ({
    name: `AM ${method}, ${source} queries${suffix}`,
    needsReferenceQueries: source,
    apply: (seq, r, c) => { new Compactor({ method, ratio: r, protect, queries: c.referenceQueries![source]! }).compactSync(seq); },
  });
  const n = (name: string): string => name + suffix;
  // Sliding window and StreamingLLM ignore `protect`: listed once, without a suffix.
  const recency: Method[] = suffix ? [] : [
    evict('slidingWindow', EvictionPolicy.slidingWindow({ window: 0 }), ratio),
    evict('streamingLLM (4 sinks)', EvictionPolicy.streamingLLM({ sinks: 4, window: 0 }), ratio),
  ];
  return [
    ...recency,
    evict(n('h2o'), EvictionPolicy.h2o(protect), ratio),
    evict(n('h2o + adaptive'), EvictionPolicy.h2o(protect), adaptive),
    evict(n(`snapKV (window ${window}, pool 7)`), EvictionPolicy.snapKV({ window, pool: 7, sinks: protect.sinks }), ratio),
    evict(n('snapKV + adaptive'), EvictionPolicy.snapKV({ window, pool: 7, sinks: protect.sinks }), adaptive),
    evict(n('snapKV + pyramid'), EvictionPolicy.snapKV({ window, pool: 7, sinks: protect.sinks }), (r) => ({ ratio: r, schedule: 'pyramid' })),
    evict(n('tova'), EvictionPolicy.tova(protect), ratio),
    evict(n('keyNorm'), EvictionPolicy.keyNorm(protect), ratio),
    evict(n('random'), EvictionPolicy.random(1, protect), ratio),
    attentionMatching('highest-attention'),
    attentionMatching('omp'),
    attentionMatchingWith('highest-attention', 'repeat-prefill'),
    attentionMatchingWith('omp', 'repeat-prefill'),
    attentionMatchingWith('highest-attention', 'self-study'),
    attentionMatchingWith('omp', 'self-study'),
  ];
}

const RATIOS = [0.5, 0.25, 0.1, 0.05, 0.02];

/**
 * A prefilled sequence plus held-out queries per layer; error(seq) is ‖O − O_full‖ / ‖O_full‖
 * over every held-out query (decode attention, all prefix rows visible) and every layer.
 */
interface QualityCase {
  seq: Sequence;
  layers: number;
  heldOut: Float32Array[][]; // [layer][query] -> [queryHeads * D]
  /** Per layer [n, queryHeads, D] reference queries by source (real-model streams only). */
  referenceQueries?: Partial<Record<ReferenceSource, Float32Array[]>>;
}

function outputs(seq: Sequence, c: QualityCase): Float32Array[] {
  const out: Float32Array[] = [];
  for (let l = 0; l < c.layers; l++) for (const q of c.heldOut[l]!) out.push(seq.attention(l, q));
  return out;
}

function relError(a: Float32Array[], b: Float32Array[]): { num: number; den: number } {
  let num = 0, den = 0;
  a.forEach((x, i) => {
    const y = b[i]!;
    for (let j = 0; j < x.length; j++) { num += (x[j]! - y[j]!) ** 2; den += y[j]! ** 2; }
  });
  return { num, den };
}

function evaluate(cases: QualityCase[], ms: Method[]): Record<string, number[]> {
  const table: Record<string, number[]> = {};
  const full = cases.map((c) => outputs(c.seq, c));
  for (const m of ms) {
    const source = m.needsReferenceQueries;
    if (source && !cases.every((c) => c.referenceQueries?.[source])) continue;
    table[m.name] = RATIOS.map((ratio) => {
      let num = 0, den = 0;
      cases.forEach((c, i) => {
        const fork = c.seq.fork();
        m.apply(fork, ratio, c);
        const e = relError(outputs(fork, c), full[i]!);
        num += e.num; den += e.den;
        fork.free();
      });
      return Math.sqrt(num / den);
    });
    console.log(`  ${m.name.padEnd(28)} ${table[m.name]!.map((x) => x.toFixed(4)).join('  ')}`);
  }
  return table;
}

/** Appends the prefix and runs its queries (chunked causal attention) with scores and recording. */
function prefill(seq: Sequence, layer: number, keys: Float32Array, values: Float32Array, queries: Float32Array, rowFloats: number, queryFloats: number, chunk: number): void {
  const T = keys.length / rowFloats;
  for (let t = 0; t < T; t += chunk) {
    const e = Math.min(T, t + chunk);
    seq.append(layer, keys.subarray(t * rowFloats, e * rowFloats), values.subarray(t * rowFloats, e * rowFloats));
    seq.attention(layer, queries.subarray(t * queryFloats, e * queryFloats), { accumulateScores: true, recordQueries: true });
  }
}

function syntheticQuality(): Record<string, number[]> {
  const H = 4, G = 4, D = 128, T = args.quick ? 1024 : 4096, heldOut = 64, seeds = args.quick ? 1 : 3;
  const cache = new KVCache({ layers: 1, kvHeads: H, headDim: D, queryHeads: H * G, keys: 'f32', values: 'f32', recentQueries: 32 * G });
  const cases: QualityCase[] = [];
  for (let s = 0; s < seeds; s++) {
    const st = syntheticStreams({ kvHeads: H, group: G, headDim: D, tokens: T, heldOut, seed: 1000 + s, selfStudy: 8 });
    const seq = cache.createSequence();
    const qf = H * G * D;
    prefill(seq, 0, st.keys, st.values, st.queries.subarray(0, T * qf), H * D, qf, 256);
    const held = Array.from({ length: heldOut }, (_, i) => st.queries.slice((T + i) * qf, (T + i + 1) * qf));
    cases.push({ seq, layers: 1, heldOut: [held], referenceQueries: { 'self-study': [st.selfStudyQueries!] } });
  }
  console.log(`synthetic: ${seeds} × ${T} tokens, ${H} kv heads × ${D}, GQA ${G}, ${heldOut} held-out queries; keep ${RATIOS.join(' / ')}`);
  const table = evaluate(cases, methods({ sinks: 4, recent: 32 }, 32));
  cache.dispose();
  return table;
}

function storiesQuality(): Record<string, number[]> {
  const streams = storiesStreams({ windows: args.quick ? 1 : 4 });
  const { layers, kvHeads: H, headDim: D, queryHeads: QH } = streams.dims;
  const P = streams.prefix;
  const cache = new KVCache({ layers, kvHeads: H, headDim: D, queryHeads: QH, keys: 'f32', values: 'f32', recentQueries: 64 * (QH / H) });
  const cases: QualityCase[] = streams.windows.map((w) => {
    const seq = cache.createSequence();
    for (let l = 0; l < layers; l++) prefill(seq, l, w.keys[l]!, w.values[l]!, w.prefixQueries[l]!, H * D, QH * D, 64);
    const heldOut = w.heldOut.map((q) => Array.from({ length: q.length / (QH * D) }, (_, i) => q.slice(i * QH * D, (i + 1) * QH * D)));
    return { seq, layers, heldOut, referenceQueries: { 'repeat-prefill': w.repeatQueries, 'self-study': w.selfStudyQueries } };
  });
  const held = cases[0]!.heldOut[0]!.length;
  console.log(`stories260K: ${cases.length} windows, prefix ${P}, ${held} held-out queries per layer; ${layers} layers, ${H} kv heads × ${D}, GQA ${QH / H}; self-study 8 × 64 sampled tokens`);
  // The prefix is short (256 rows): the policies run with the protection the synthetic
  // streams use scaled down, and with only one sink; the better of the two is what counts.
  const table = evaluate(cases, [
    ...methods({ sinks: 4, recent: 16 }, 16),
    ...methods({ sinks: 1, recent: 0 }, 16, ' (1 sink)'),
  ]);
  cache.dispose();
  return table;
}

function benchQuality(): void {
  const only = args.values.streams;
  results['quality'] = {
    ratios: RATIOS,
    synthetic: only === 'stories' ? undefined : syntheticQuality(),
    stories: only === 'synthetic' ? undefined : storiesQuality(),
  };
}

if (part === 'all' || part === 'scores') benchScores();
if (part === 'all' || part === 'evict') benchEvict();
if (part === 'all' || part === 'quality') benchQuality();
if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
