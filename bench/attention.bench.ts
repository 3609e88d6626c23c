// `npm run bench:attention`: decode attention of one Llama-3-8B-shaped layer (8 kv heads × 128,
// 32 query heads) over 4K/16K/64K tokens, f16 and f32 storage, cold (sequences rotate so
// the working set exceeds 256 MiB), 1 and 2 threads. Reports the median time, GB/s of KV
// read, the ratio to the read-bandwidth floor measured in this run, a plain-JavaScript
// attention as the baseline, and the per-call overhead of attention.
// Flags: --json FILE, --quick (4K and 16K only, shorter timing).
import { KVCache, type Sequence, type Storage } from '../lib/index';
import { markdownTable, parseBenchArgs, progress, randomFloats, readBandwidth, tinybenchMedianMs, writeJson } from './support/bench-utils';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const QUERY_HEADS = 32;
const COLD_BYTES = 256 * 2 ** 20;

const args = parseBenchArgs({
  command: 'npm run bench:attention --',
  summary:
    'Decode attention of one Llama-3-8B-shaped layer (8 kv heads × 128, 32 query heads) over 4K/16K/64K tokens,\n' +
    'f16 and f32 storage, 1 and 2 threads, against the read-bandwidth floor and plain JavaScript.\n' +
    'Other benchmarks: npx tsx bench/{quantization,eviction,compactor}.bench.ts --help',
});
const tokenCounts = args.quick ? [4096, 16384] : [4096, 16384, 65536];
const storages: Storage[] = ['f16', 'f32'];
const threadCounts = [1, 2];
const timeMs = args.quick ? 400 : 1000;

interface Row {
  storage: Storage;
  tokens: number;
  threads: number;
  sequences: number;
  medianMs: number;
  bytesRead: number;
  gbPerSecond: number;
  floorMs: number;
  ratioToFloor: number;
}

function fill(cache: KVCache, tokens: number, chunk: Float32Array, chunkTokens: number): Sequence {
  const seq = cache.createSequence();
  for (let t = 0; t < tokens; t += chunkTokens) seq.append(0, chunk, chunk);
  return seq;
}

/** The same attention in plain JavaScript over f32 rows: [T, kvHeads, headDim] keys/values. */
function jsAttention(keys: Float32Array, values: Float32Array, T: number, q: Float32Array, out: Float32Array): void {
  const g = QUERY_HEADS / KV_HEADS;
  const scale = 1 / Math.sqrt(HEAD_DIM);
  const logits = new Float32Array(T);
  for (let qh = 0; qh < QUERY_HEADS; qh++) {
    const h = Math.floor(qh / g);
    const qo = qh * HEAD_DIM;
    let max = -Infinity;
    for (let t = 0; t < T; t++) {
      const ko = (t * KV_HEADS + h) * HEAD_DIM;
      let s = 0;
      for (let d = 0; d < HEAD_DIM; d++) s += q[qo + d]! * keys[ko + d]!;
      logits[t] = s * scale;
      if (logits[t]! > max) max = logits[t]!;
    }
    let sum = 0;
    for (let d = 0; d < HEAD_DIM; d++) out[qo + d] = 0;
    for (let t = 0; t < T; t++) {
      const p = Math.exp(logits[t]! - max);
      sum += p;
      const vo = (t * KV_HEADS + h) * HEAD_DIM;
      for (let d = 0; d < HEAD_DIM; d++) out[qo + d] = out[qo + d]! + p * values[vo + d]!;
    }
    for (let d = 0; d < HEAD_DIM; d++) out[qo + d] = out[qo + d]! / sum;
  }
}

async function main(): Promise<void> {
  const devices = KVCache.devices();
  console.log(`kvcompact decode attention benchmark — CPU ${devices.cpu.simd}, ${devices.cpu.threads} hardware threads, Node ${process.version}`);
  progress('measuring the read-bandwidth floor (1 GiB pass)...');
  const floor = new Map<number, number>();
  for (const t of threadCounts) floor.set(t, readBandwidth(2 ** 30, t));
  progress('');
  console.log(`read bandwidth floor: ${threadCounts.map((t) => `${t} thread${t > 1 ? 's' : ''} ${(floor.get(t)! / 1e9).toFixed(1)} GB/s`).join(', ')}`);

  const chunkTokens = 1024;
  const chunk = randomFloats(chunkTokens * KV_HEADS * HEAD_DIM, 7);
  const query = randomFloats(QUERY_HEADS * HEAD_DIM, 11);
  const rows: Row[] = [];
  for (const storage of storages) {
    for (const tokens of tokenCounts) {
      for (const threads of threadCounts) {
        const cache = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, keys: storage, values: storage, threads });
        const layout = KVCache.bytesPerToken({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, keys: storage, values: storage });
        const sequences = Math.max(2, Math.ceil((COLD_BYTES * 1.25) / (layout * tokens)));
        const seqs: Sequence[] = [];
        for (let i = 0; i < sequences; i++) {
          progress(`${storage} ${tokens} tokens ${threads} thread(s): filling sequence ${i + 1}/${sequences}`);
          seqs.push(fill(cache, tokens, chunk, chunkTokens));
        }
        const out = new Float32Array(QUERY_HEADS * HEAD_DIM);
        let next = 0;
        progress(`${storage} ${tokens} tokens ${threads} thread(s): timing`);
        const medianMs = await tinybenchMedianMs(`${storage}-${tokens}-${threads}`, () => {
          seqs[next++ % sequences]!.attention(0, query, { out });
        }, timeMs);
        // Bytes the kernel reads: key and value rows plus beta and position per row.
        const rowBytes = (storage === 'f32' ? 8 : 4) * HEAD_DIM + 8;
        const bytesRead = tokens * KV_HEADS * rowBytes;
        const floorMs = (bytesRead / floor.get(threads)!) * 1e3;
        rows.push({ storage, tokens, threads, sequences, medianMs, bytesRead, gbPerSecond: bytesRead / (medianMs / 1e3) / 1e9, floorMs, ratioToFloor: medianMs / floorMs });
        cache.dispose();
      }
    }
  }
  progress('');

  // Plain-JavaScript baseline, same shape, f32 rows, 1 thread.
  const baseline: { tokens: number; medianMs: number; speedupOfKvcompactF32: number }[] = [];
  for (const tokens of [4096, 16384]) {
    progress(`plain JavaScript attention, ${tokens} tokens`);
    const keys = randomFloats(tokens * KV_HEADS * HEAD_DIM, 3);
    const values = randomFloats(tokens * KV_HEADS * HEAD_DIM, 5);
    const out = new Float32Array(QUERY_HEADS * HEAD_DIM);
    const medianMs = await tinybenchMedianMs(`js-${tokens}`, () => jsAttention(keys, values, tokens, query, out), timeMs);
    const ours = rows.find((r) => r.storage === 'f32' && r.tokens === tokens && r.threads === 1)!;
    baseline.push({ tokens, medianMs, speedupOfKvcompactF32: medianMs / ours.medianMs });
  }
  progress('');

  // Per-call overhead: one token in one block, the Llama layer shape.
  const small = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, threads: 1 });
  const one = small.createSequence();
  one.append(0, randomFloats(KV_HEADS * HEAD_DIM, 1), randomFloats(KV_HEADS * HEAD_DIM, 2));
  const out = new Float32Array(QUERY_HEADS * HEAD_DIM);
  const overheadUs = (await tinybenchMedianMs('overhead', () => one.attention(0, query, { out }), timeMs)) * 1e3;
  const lengthCallUs = (await tinybenchMedianMs('length', () => one.length(0, 0), timeMs)) * 1e3;
  small.dispose();

  console.log('\nDecode attention, 1 layer, 8 kv heads × 128, 32 query heads (GQA 4), cold:\n');
  console.log(markdownTable(
    ['storage', 'tokens', 'threads', 'median ms', 'KV read GB/s', 'floor ms', 'ratio to floor'],
    rows.map((r) => [r.storage, r.tokens, r.threads, r.medianMs.toFixed(3), r.gbPerSecond.toFixed(1), r.floorMs.toFixed(3), r.ratioToFloor.toFixed(2)]),
  ));
  console.log('\nPlain-JavaScript attention (f32, 1 thread), same shape:\n');
  console.log(markdownTable(['tokens', 'median ms', 'kvcompact f32 1-thread speedup'], baseline.map((b) => [b.tokens, b.medianMs.toFixed(2), `${b.speedupOfKvcompactF32.toFixed(1)}×`])));
  console.log(`\nPer-call overhead of attention (1 token, 1 block, Llama layer shape): ${overheadUs.toFixed(2)} µs median; a trivial native call (length): ${lengthCallUs.toFixed(2)} µs`);
  writeJson(args.json, {
    machine: { simd: devices.cpu.simd, hardwareThreads: devices.cpu.threads, node: process.version },
    readBandwidthGBs: Object.fromEntries([...floor].map(([t, b]) => [t, b / 1e9])),
    decode: rows,
    javascriptBaseline: baseline,
    perCallOverheadUs: overheadUs,
    trivialNativeCallUs: lengthCallUs,
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
