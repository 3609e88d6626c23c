// `npx tsx bench/lowrank-rope.bench.ts`: the cost of the host low-rank path (lowRank with rope,
// or unequal key / value ranks: every row lifted and rotated per call, cpp/core/lowrank_host.cpp)
// against the same layer as plain f16 and int8 rows and as low-rank post-RoPE rows attended by
// the block kernels, same process, same data. Pre-RoPE rows are scored by the fused lift of
// cpp/cpu/lowrank/rope_logits.inl; its arithmetic floor (the D x r multiply-adds of the lift
// per row and kv head, at the 1-thread peak FMA rate measured in the same run, divided by the
// threads) is printed beside it. One Llama-3-8B-shaped layer (8 kv heads × 128, 32 query
// heads), decode (tq = 1), on caches with each `--threads` count (the host path runs its
// streams on the cache's threads like the block kernels); medians of CPU time per call
// (process.cpuUsage: all threads of the process) and of wall time per call, and the best wall
// time (what the threads give when the shared machine leaves them the cores). The caches of
// one variant are timed in turns (one call each, round after round) so that load on a shared
// machine reaches every thread count alike; wall-time ratios to the f16 rows at the same
// thread count and to 1 thread of the same variant are the numbers to compare.
// Flags: --threads 1,2 (default 1)  --json FILE  --quick (4K tokens only, fewer runs).
import { KVCache, type KVCacheOptions } from '../lib/index';
import { native } from '../lib/native/binding';
import { positiveInt } from '../examples/shared/cli';
import { checkedArgs, markdownTable, parseBenchArgs, randomFloats, writeJson } from './support/bench-utils';

const KV_HEADS = 8, HEAD_DIM = 128, QUERY_HEADS = 32;
const args = parseBenchArgs({
  command: 'npx tsx bench/lowrank-rope.bench.ts',
  summary: 'Host low-rank path (lowRank + rope, unequal ranks) against plain and block-kernel low-rank decode.',
  options: {
    threads: { type: 'string', value: 'N[,N...]', description: 'cache threads, each timed on its own caches (default 1)' },
  },
});
const threadCounts = checkedArgs(() => (args.values.threads ?? '1').split(',').map((t) => positiveInt('threads', t, 0)));
const tokenCounts = args.quick ? [4096] : [4096, 16384];
const runs = args.quick ? 5 : 11;

function medianCpuMs(fn: () => void, n: number): number {
  const t: number[] = [];
  for (let i = 0; i < n; i++) {
    const c0 = process.cpuUsage();
    fn();
    const c = process.cpuUsage(c0);
    t.push((c.user + c.system) / 1e3);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(n / 2)]!;
}

const rope = { theta: 500000 } as const;
const variants: [string, Partial<KVCacheOptions>][] = [
  ['f16 rows', { keys: 'f16', values: 'f16' }],
  ['int8 rows', { keys: 'int8', values: 'int8' }],
  ['low-rank r32/r32 int8, post-RoPE (block kernels)', { keys: 'int8', values: 'int8', lowRank: { keys: 32, values: 32, calibrationRows: 256 } }],
  ['low-rank K r32 int8 + V int8 unprojected, post-RoPE (host)', { keys: 'int8', values: 'int8', lowRank: { keys: 32, values: 128, calibrationRows: 256 } }],
  ['low-rank K r32 int8 + V int8 unprojected, pre-RoPE (host)', { keys: 'int8', values: 'int8', rope, lowRank: { keys: 32, values: 128, calibrationRows: 256 } }],
  ['low-rank r32/r32 int8, pre-RoPE (host)', { keys: 'int8', values: 'int8', rope, lowRank: { keys: 32, values: 32, calibrationRows: 256 } }],
  ['low-rank r32/r32 f16, pre-RoPE (host)', { keys: 'f16', values: 'f16', rope, lowRank: { keys: 32, values: 32, calibrationRows: 256 } }],
];
// Peak FMA rate in CPU time, like the decode times (the machine is shared: wall time would
// count other processes): independent vector FMA chains of the addon's probe.
const peak = (() => {
  const iterations = 20_000_000;
  const probe = native().fmaProbe(iterations / 10);
  return (probe.multiplyAdds * 10) / (medianCpuMs(() => native().fmaProbe(iterations), 7) / 1e3);
})();
const median = (t: number[]) => [...t].sort((a, b) => a - b)[Math.floor(t.length / 2)]!;
const rows: (string | number)[][] = [];
const json: unknown[] = [];
for (const tokens of tokenCounts) {
  const k = randomFloats(tokens * KV_HEADS * HEAD_DIM, 1), v = randomFloats(tokens * KV_HEADS * HEAD_DIM, 2);
  const q = randomFloats(QUERY_HEADS * HEAD_DIM, 3);
  const f16Wall = new Map<number, number>();
  for (const [name, o] of variants) {
    const caches = threadCounts.map((threads) => new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, threads, groupSize: 32, ...o }));
    try {
      const seqs = caches.map((cache) => {
        const seq = cache.createSequence();
        seq.append(0, k, v);
        seq.attention(0, q);  // warm: first-touch of scratch, tables
        return seq;
      });
      const cpu: number[][] = seqs.map(() => []), wall: number[][] = seqs.map(() => []);
      for (let run = 0; run < runs; run++) {
        seqs.forEach((seq, i) => {
          const c0 = process.cpuUsage(), w0 = process.hrtime.bigint();
          seq.attention(0, q);
          wall[i]!.push(Number(process.hrtime.bigint() - w0) / 1e6);
          const c = process.cpuUsage(c0);
          cpu[i]!.push((c.user + c.system) / 1e3);
        });
      }
      threadCounts.forEach((threads, i) => {
        const cpuMs = median(cpu[i]!), wallMs = median(wall[i]!), bestMs = Math.min(...wall[i]!);
        if (!f16Wall.has(threads)) f16Wall.set(threads, wallMs);
        const one = threadCounts.indexOf(1);
        const speedUp = one < 0 ? '' : `${(median(wall[one]!) / wallMs).toFixed(2)} / ${(Math.min(...wall[one]!) / bestMs).toFixed(2)}`;
        // lift floor: tokens x kv heads x D x r multiply-adds at the measured peak, over the threads
        const liftFloorMs = o.rope ? (tokens * KV_HEADS * HEAD_DIM * 32) / peak * 1e3 / threads : NaN;
        rows.push([tokens, threads, name, cpuMs.toFixed(2), wallMs.toFixed(2), bestMs.toFixed(2), (wallMs / f16Wall.get(threads)!).toFixed(2),
          speedUp, o.rope ? liftFloorMs.toFixed(2) : '']);
        json.push({ tokens, threads, name, cpuMs, wallMs, bestWallMs: bestMs, liftFloorMs: o.rope ? liftFloorMs : undefined });
      });
    } finally {
      for (const cache of caches) cache.dispose();
    }
  }
}
console.log(`peak FMA ${(peak / 1e9).toFixed(1)} G/s (1 thread)`);
console.log(markdownTable(['tokens', 'threads', 'cache', 'CPU ms / call (median)', 'wall ms (median)', 'wall ms (best)', 'wall × f16 (same threads)',
  'wall speed-up vs 1 thread (median / best)', 'lift FMA floor ms'], rows));
if (args.json) writeJson(args.json, json);
