// `npx tsx bench/rope.bench.ts`: the cost of RoPE applied by the cache (option `rope`, keys
// stored before RoPE) in decode and prefill attention, against the same cache without it
// (keys stored after RoPE), same process, same data. One Llama-3-8B-shaped layer (8 kv heads
// × 128, 32 query heads), f16 and int8 keys, 4K and 16K tokens, 1 thread; decode (tq = 1) and
// a 64-token prefill chunk. Reports medians of CPU time per call (process.cpuUsage: with
// threads: 1 attention runs on the calling thread, and CPU time is what a machine shared with
// other jobs still measures fairly), wall-time medians, the ratio rope / plain, and the
// read-bandwidth floor of the KV bytes measured in this run.
// Flags: --json FILE, --quick (4K only, fewer runs).
import { KVCache, type Storage } from '../lib/index';
import { markdownTable, medianSeconds, parseArgs, progress, randomFloats, readBandwidth, writeJson } from './support/bench-utils';

const KV_HEADS = 8, HEAD_DIM = 128, QUERY_HEADS = 32;
const args = parseArgs();
const tokenCounts = args.quick ? [4096] : [4096, 16384];
const runs = args.quick ? 9 : 21;
const bandwidth = readBandwidth(2 ** 30, 1, args.quick ? 3 : 7);

/** Median CPU time (user + system of this process) of fn, in ms. */
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

const rows: (string | number)[][] = [];
const json: unknown[] = [];
for (const keys of ['f16', 'int8'] as Storage[]) {
  for (const tokens of tokenCounts) {
    for (const tq of [1, 64]) {
      const ms: Record<string, number> = {};
      let bytes = 0;
      for (const rope of [false, true]) {
        progress(`rope bench: ${keys} keys, ${tokens} tokens, tq ${tq}, rope ${rope}`);
        const cache = new KVCache({
          layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, keys, values: 'f16', threads: 1,
          ...(rope ? { rope: { theta: 500000 } } : {}),
        });
        const seq = cache.createSequence();
        const chunk = 256;
        const data = randomFloats(chunk * KV_HEADS * HEAD_DIM, tokens);
        for (let t = 0; t < tokens; t += chunk) seq.append(0, data, data);
        const q = randomFloats(tq * QUERY_HEADS * HEAD_DIM, 7);
        const out = new Float32Array(q.length);
        seq.attention(0, q, { out });
        ms[rope ? 'rope' : 'plain'] = medianSeconds(() => seq.attention(0, q, { out }), runs) * 1e3;
        ms[rope ? 'ropeCpu' : 'plainCpu'] = medianCpuMs(() => seq.attention(0, q, { out }), runs);
        bytes = cache.stats().bytesUsed;
        cache.dispose();
      }
      const floorMs = (bytes / bandwidth) * 1e3;
      rows.push([
        keys, tokens, tq, ms.plainCpu!.toFixed(3), ms.ropeCpu!.toFixed(3), (ms.ropeCpu! / ms.plainCpu!).toFixed(2),
        ms.plain!.toFixed(3), ms.rope!.toFixed(3), floorMs.toFixed(3),
      ]);
      json.push({ keys, tokens, tq, ...ms, cpuRatio: ms.ropeCpu! / ms.plainCpu!, floorMs });
    }
  }
}
progress('');
console.log(`read bandwidth (1 thread, this run): ${(bandwidth / 1e9).toFixed(1)} GB/s\n`);
console.log(markdownTable(
  ['keys', 'tokens', 'tq', 'plain CPU ms', 'rope CPU ms', 'rope / plain (CPU)', 'plain wall ms', 'rope wall ms', 'KV read floor ms'], rows,
));
writeJson(args.json, { bandwidth, rows: json });
