// `npx tsx bench/lowrank-rope.bench.ts`: the cost of the host low-rank path (lowRank with rope,
// or unequal key / value ranks: every row lifted and rotated per call, cpp/core/lowrank_host.cpp)
// against the same layer as plain f16 and int8 rows and as low-rank post-RoPE rows attended by
// the block kernels, same process, same data. Pre-RoPE rows are scored by the fused lift of
// cpp/cpu/lowrank/rope_logits.inl; its arithmetic floor (the D x r multiply-adds of the lift
// per row and kv head, at the peak FMA rate measured in the same run) is printed beside it. One Llama-3-8B-shaped layer (8 kv heads × 128,
// 32 query heads), 1 thread, decode (tq = 1); medians of CPU time per call (process.cpuUsage:
// attention runs on the calling thread with threads: 1).
// Flags: --json FILE, --quick (4K tokens only, fewer runs).
import { KVCache, type KVCacheOptions } from '../lib/index';
import { native } from '../lib/native/binding';
import { markdownTable, parseBenchArgs, randomFloats, writeJson } from './support/bench-utils';

const KV_HEADS = 8, HEAD_DIM = 128, QUERY_HEADS = 32;
const args = parseBenchArgs({
  command: 'npx tsx bench/lowrank-rope.bench.ts',
  summary: 'Host low-rank path (lowRank + rope, unequal ranks) against plain and block-kernel low-rank decode.',
});
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
const rows: (string | number)[][] = [];
const json: unknown[] = [];
for (const tokens of tokenCounts) {
  const k = randomFloats(tokens * KV_HEADS * HEAD_DIM, 1), v = randomFloats(tokens * KV_HEADS * HEAD_DIM, 2);
  const q = randomFloats(QUERY_HEADS * HEAD_DIM, 3);
  let base = 0;
  for (const [name, o] of variants) {
    using cache = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, threads: 1, groupSize: 32, ...o });
    const seq = cache.createSequence();
    seq.append(0, k, v);
    const ms = medianCpuMs(() => seq.attention(0, q), runs);
    if (!base) base = ms;
    // lift floor: tokens x kv heads x D x r multiply-adds at the measured peak
    const liftFloorMs = o.rope ? (tokens * KV_HEADS * HEAD_DIM * 32) / peak * 1e3 : NaN;
    rows.push([tokens, name, ms.toFixed(2), (ms / base).toFixed(2), o.rope ? liftFloorMs.toFixed(2) : '']);
    json.push({ tokens, name, ms, liftFloorMs: o.rope ? liftFloorMs : undefined });
  }
}
console.log(`peak FMA ${(peak / 1e9).toFixed(1)} G/s (1 thread)`);
console.log(markdownTable(['tokens', 'cache', 'decode CPU ms (median)', 'ratio to f16', 'lift FMA floor ms'], rows));
if (args.json) writeJson(args.json, json);
