// `npx tsx bench/maintain.bench.ts`: decode-step latency while cache.maintain() compacts in
// the background. One Llama-3-8B-shaped layer (8 kv heads × 128, 32 query heads: GQA 4), f16,
// a sequence held at about --tokens rows per stream: the maintained run has maxBytes of
// --tokens rows and headroom --every / --tokens, so a compaction pass (Attention Matching with
// the recorded decode queries) starts every --every tokens; the baseline run decodes the
// same steps on the same prefill without maintenance, truncated back every --every tokens so
// its lengths follow the same sawtooth. A decode step = append one token + attention with
// recordQueries, timed alone; the loop yields to the event loop between steps (as an engine
// serving requests does), which is where a finished pass is swapped in.
// Reports median and p99 step times of both runs, the ratio p99(maintained) / median(baseline),
// and the passes (work and swap times).
// Flags: --tokens 16384  --every 1024  --steps 4096  --threads 2  --json FILE  --quick
import { Compactor, KVCache, type MaintenancePass, type Sequence } from '../lib/index';
import { positiveInt } from '../examples/shared/cli';
import { checkedArgs, markdownTable, parseBenchArgs, progress, writeJson } from './support/bench-utils';
import { syntheticKV, syntheticQueries } from './support/synthetic-streams';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const QUERY_HEADS = 32;
const ROW = KV_HEADS * HEAD_DIM;
const Q = QUERY_HEADS * HEAD_DIM;

const args = parseBenchArgs({
  command: 'npx tsx bench/maintain.bench.ts',
  summary: 'Decode-step latency with background compaction (cache.maintain) against the same decode without it.',
  options: {
    tokens: { type: 'string', value: 'N', description: 'rows per stream the target holds (default 16384; --quick 4096)' },
    every: { type: 'string', value: 'N', description: 'tokens between compaction passes (default 1024; --quick 512)' },
    steps: { type: 'string', value: 'N', description: 'decode steps per run (default 4 × every)' },
    threads: { type: 'string', value: 'N', description: 'attention threads (default 2)' },
  },
});
const { tokens, every, steps, threads } = checkedArgs(() => {
  const tokens = positiveInt('tokens', args.values.tokens, args.quick ? 4096 : 16384);
  const every = positiveInt('every', args.values.every, args.quick ? 512 : 1024);
  return { tokens, every, steps: positiveInt('steps', args.values.steps, 4 * every), threads: positiveInt('threads', args.values.threads, 2) };
});
const WARMUP = 32;
const prefillRows = tokens - every;

const world = syntheticKV({ tokens: prefillRows + steps, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS }, 11);
const decodeQueries = syntheticQueries(world, 256, 12);
const cache = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, keys: 'f16', values: 'f16', threads });

const base = cache.createSequence();
for (let t0 = 0; t0 < prefillRows; t0 += 1024) {
  const t1 = Math.min(prefillRows, t0 + 1024);
  base.append(0, world.keys.subarray(t0 * ROW, t1 * ROW), world.values.subarray(t0 * ROW, t1 * ROW));
}
// Reference queries for compaction: the prefill's last 64 queries, recorded (causal, Tq = 64).
base.attention(0, syntheticQueries(world, 64, 13), { recordQueries: true });

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function decode(seq: Sequence, label: string, truncateEvery: boolean): Promise<number[]> {
  const times: number[] = [];
  for (let s = 0; s < steps; s++) {
    const t = prefillRows + s;
    const k = world.keys.subarray(t * ROW, (t + 1) * ROW);
    const v = world.values.subarray(t * ROW, (t + 1) * ROW);
    const q = decodeQueries.subarray((s % 256) * Q, (s % 256 + 1) * Q);
    const t0 = process.hrtime.bigint();
    seq.append(0, k, v);
    seq.attention(0, q, { recordQueries: true });
    const dt = Number(process.hrtime.bigint() - t0) / 1e6;
    if (s >= WARMUP) times.push(dt);
    if (truncateEvery && (s + 1) % every === 0) seq.truncate(prefillRows);
    if (s % 64 === 0) progress(`${label}: step ${s}/${steps}`);
    await tick();
  }
  progress('');
  return times;
}

async function main(): Promise<void> {
  const baselineSeq = base.fork();
  const baseline = (await decode(baselineSeq, 'baseline (no maintenance)', true)).sort((a, b) => a - b);
  baselineSeq.free();

  const seq = base.fork();
  const stats = cache.stats();
  const maxBytes = KV_HEADS * Math.ceil(tokens / cache.config.blockSize) * stats.blockBytes;
  const maintainer = cache.maintain(seq, { maxBytes, headroom: every / tokens, policy: new Compactor({ ratio: 0.5 }), keepRecent: 64, sinks: 4 });
  const passes: MaintenancePass[] = [];
  const failures: unknown[] = [];
  maintainer.on('pass', (p: MaintenancePass) => passes.push(p));
  maintainer.on('error', (e) => failures.push(e));
  const maintained = (await decode(seq, 'maintained (compaction every ~' + every + ' tokens)', false)).sort((a, b) => a - b);
  await maintainer.idle();
  await maintainer.stop();

  const median = (a: number[]) => percentile(a, 0.5);
  const row = (name: string, a: number[]) => [name, median(a).toFixed(2), percentile(a, 0.99).toFixed(2), a[a.length - 1]!.toFixed(2)];
  console.log(`\nDecode step = append 1 token + attention (recordQueries), 1 layer, 8 kv heads × 128, GQA 4, f16, ${threads} threads; ` +
    `~${tokens} rows per stream, ${steps} steps (${WARMUP} warm-up steps dropped)\n`);
  console.log(markdownTable(['run', 'median ms', 'p99 ms', 'max ms'], [row('baseline', baseline), row('maintained', maintained)]));
  const ratio = percentile(maintained, 0.99) / median(baseline);
  console.log(`\np99(maintained) / median(baseline) = ${ratio.toFixed(3)} (target ≤ 1.5); p99(baseline) / median(baseline) = ${(percentile(baseline, 0.99) / median(baseline)).toFixed(3)}`);
  console.log(`passes: ${passes.length}, errors: ${failures.length}, skips: ${maintainer.skips}`);
  if (passes.length) {
    console.log(markdownTable(['pass', 'rows before', 'rows after', 'appended during', 'work ms', 'swap ms', 'snapshot ms'], passes.map((p, i) => [
      String(i + 1), String(p.rowsBefore), String(p.rowsAfter), String(p.rowsAppendedDuring),
      p.milliseconds.work.toFixed(0), p.milliseconds.swap.toFixed(3), p.milliseconds.snapshot.toFixed(3),
    ])));
  }
  writeJson(args.json, {
    tokens, every, steps, threads,
    baseline: { medianMs: median(baseline), p99Ms: percentile(baseline, 0.99) },
    maintained: { medianMs: median(maintained), p99Ms: percentile(maintained, 0.99) },
    ratio,
    passes: passes.map((p) => ({ rowsBefore: p.rowsBefore, rowsAfter: p.rowsAfter, appendedDuring: p.rowsAppendedDuring, ...p.milliseconds })),
    errors: failures.map(String),
  });
  cache.dispose();
}

void main();
