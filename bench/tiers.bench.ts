// `npx tsx bench/tiers.bench.ts`: precision tiers against single-format caches, one
// Llama-3-8B-shaped layer (8 kv heads × 128, 32 query heads: GQA 4), in one process:
// - bytes per token (stats(), every block overhead counted) and its ratio to f16;
// - median decode time (Tq = 1) and its ratio to f16 and to the single-format cache of the
//   lower tier, with the read-bandwidth floor of the bytes each reads;
// - single-token append: median and 99th percentile over a run of appends that crosses many
//   agings (a tiered append requantizes a batch of whole blocks every rowsPerBlock rows).
// Flags: --tokens 16384[,65536]  --threads 2  --json FILE  --quick (see --help)
import { KVCache, type KVCacheOptions, type Sequence } from '../lib/index';
import { positiveInt } from '../examples/shared/cli';
import { checkedArgs, markdownTable, medianSeconds, parseBenchArgs, progress, randomFloats, readBandwidth, writeJson } from './support/bench-utils';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const QUERY_HEADS = 32;

const args = parseBenchArgs({
  command: 'npx tsx bench/tiers.bench.ts',
  summary: 'Precision tiers against single-format caches (Llama-3-8B-shaped layer): bytes per token, decode time, append time.',
  options: {
    tokens: { type: 'string', value: 'N[,N...]', description: 'context lengths (default 16384,65536; --quick 4096)' },
    threads: { type: 'string', value: 'N', description: 'attention threads (default 2)' },
  },
});
const { tokenCounts, threads } = checkedArgs(() => ({
  tokenCounts: (args.values.tokens ?? (args.quick ? '4096' : '16384,65536')).split(',').map((t) => positiveInt('tokens', t, 0)),
  threads: positiveInt('threads', args.values.threads, 2),
}));

const shape = { layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, groupSize: 32, threads };
const configs: { name: string; options: KVCacheOptions }[] = [
  { name: 'f16', options: { ...shape, keys: 'f16', values: 'f16' } },
  { name: 'int8/int4', options: { ...shape, keys: 'int8', values: 'int4', rotate: true } },
  { name: 'int4/int4', options: { ...shape, keys: 'int4', values: 'int4', rotate: true } },
  { name: 'tiers f16-128 → int8/int4', options: { ...shape, rotate: true, tiers: [{ rows: 128, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int4' }] } },
  { name: 'tiers f16-128 → int4/int4', options: { ...shape, rotate: true, tiers: [{ rows: 128, keys: 'f16', values: 'f16' }, { keys: 'int4', values: 'int4' }] } },
  { name: 'tiers f16-128 → int8/int8 (1024) → int4/int4', options: { ...shape, rotate: true,
    tiers: [{ rows: 128, keys: 'f16', values: 'f16' }, { rows: 1024, keys: 'int8', values: 'int8' }, { keys: 'int4', values: 'int4' }] } },
];

function load(cache: KVCache, keys: Float32Array, values: Float32Array, T: number): Sequence {
  const seq = cache.createSequence();
  const chunk = 4096;
  for (let t = 0; t < T; t += chunk) {
    const n = Math.min(chunk, T - t);
    seq.append(0, keys.subarray(t * KV_HEADS * HEAD_DIM, (t + n) * KV_HEADS * HEAD_DIM), values.subarray(t * KV_HEADS * HEAD_DIM, (t + n) * KV_HEADS * HEAD_DIM));
  }
  return seq;
}

/** Median and 99th percentile (ms) of `n` single-token appends after the stream holds T rows. */
function appendTimes(seq: Sequence, n: number): { median: number; p99: number } {
  const k = randomFloats(KV_HEADS * HEAD_DIM, 5);
  const v = randomFloats(KV_HEADS * HEAD_DIM, 6);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    seq.append(0, k, v);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(n / 2)]!, p99: times[Math.floor(n * 0.99)]! };
}

interface Row {
  tokens: number;
  cache: string;
  bytesPerToken: number;
  vsF16Bytes: number;
  decodeMs: number;
  vsF16Time: number;
  vsLowerTime: number;
  floorMs: number;
  appendMedianMs: number;
  appendP99Ms: number;
}

async function main(): Promise<void> {
  progress(`read bandwidth floor (${threads} threads)...`);
  const bandwidth = readBandwidth(1 << 30, threads);
  const rows: Row[] = [];
  for (const T of tokenCounts) {
    progress(`${T} tokens: generating rows...`);
    const keys = randomFloats(T * KV_HEADS * HEAD_DIM, 1);
    const values = randomFloats(T * KV_HEADS * HEAD_DIM, 2);
    const q = randomFloats(QUERY_HEADS * HEAD_DIM, 3);
    const out = new Float32Array(QUERY_HEADS * HEAD_DIM);
    const measured = new Map<string, Row>();
    for (const c of configs) {
      progress(`${T} tokens, ${c.name}: loading...`);
      const cache = new KVCache(c.options);
      const seq = load(cache, keys, values, T);
      const st = cache.stats();
      const runs = T >= 65536 ? 15 : 41;
      progress(`${T} tokens, ${c.name}: timing decode...`);
      seq.attention(0, q, { out });
      const ms = medianSeconds(() => seq.attention(0, q, { out }), runs) * 1e3;
      const append = appendTimes(seq, 1024);
      const f16 = measured.get('f16');
      const lower = c.name.includes('int8/int4') ? measured.get('int8/int4') : c.name.includes('int4/int4') ? measured.get('int4/int4') : undefined;
      const row: Row = {
        tokens: T, cache: c.name, bytesPerToken: st.bytesPerToken, vsF16Bytes: f16 ? st.bytesPerToken / f16.bytesPerToken : 1,
        decodeMs: ms, vsF16Time: f16 ? ms / f16.decodeMs : 1, vsLowerTime: lower ? ms / lower.decodeMs : NaN,
        floorMs: st.bytesUsed / bandwidth * 1e3, appendMedianMs: append.median, appendP99Ms: append.p99,
      };
      measured.set(c.name, row);
      rows.push(row);
      seq.free();
      cache.dispose();
    }
  }
  progress('');
  console.log(`\nOne layer (8 kv heads × 128, GQA 4, groupSize 32, rotated keys for the quantized formats, blockSize 32), ${threads} threads; ` +
    `read bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s. Bytes per token: one layer, all 8 kv heads, every block overhead counted.\n`);
  console.log(markdownTable(['tokens', 'cache', 'bytes/token', 'vs f16', 'decode ms', 'vs f16', 'vs lower tier alone', 'floor ms', 'append median ms', 'append p99 ms'],
    rows.map((r) => [r.tokens, r.cache, r.bytesPerToken.toFixed(0), r.vsF16Bytes.toFixed(3), r.decodeMs.toFixed(2), r.vsF16Time.toFixed(2) + '×',
      Number.isNaN(r.vsLowerTime) ? '-' : r.vsLowerTime.toFixed(2) + '×', r.floorMs.toFixed(2), r.appendMedianMs.toFixed(3), r.appendP99Ms.toFixed(3)])));
  writeJson(args.json, { bandwidth, threads, rows });
}

void main();
