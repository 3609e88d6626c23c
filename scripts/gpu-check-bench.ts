// The measurements of `npm run gpu-check` (scripts/gpu-check.mjs runs this file with tsx and
// folds its JSON into the report). Everything goes through the public API on device 'cuda',
// timed from JavaScript (so each figure includes the host's staging, the query upload and the
// output download), beside the device's copy bandwidth measured in the same run.
//   (a) decode attention, every storage format (keys = values), 8 kv heads × 128, 32 query
//       heads (GQA 4), 16K and 64K tokens, batch 1 (seq.attention) and 32 sequences
//       (cache.attentionBatch): median of N calls, GB/s of KV read, ratio to the floor
//       (KV bytes / the device's DRAM bandwidth from the copy probe);
//   (b) compaction of a Llama-3-8B-shaped 16K-token sequence (32 layers × 8 kv heads = 256
//       streams, head_dim 128), int8, ratio 0.1, chunkSize 4096, 128 reference query tokens
//       per layer: the configuration of bench/compactor.bench.ts, so the CPU figure in
//       BENCHMARKS.md compares directly.
// --devices prints KVCache.devices() and exits. --device cpu --small runs the same code on the CPU at toy sizes (to test this file without
// a GPU); its numbers mean nothing.
import { Compactor, KVCache, type Storage } from '../lib/index';
import { native } from '../lib/native/binding';
import { llmStreams } from '../test/compactor/llm-stream';

const argv = process.argv.slice(2);
const device = (argv.includes('--device') ? argv[argv.indexOf('--device') + 1] : 'cuda') as 'cuda' | 'cpu';
const small = argv.includes('--small');

const FORMATS: Storage[] = ['f32', 'f16', 'bf16', 'int8', 'int4'];
const KV_HEADS = 8, QUERY_HEADS = 32, D = 128;
const LENGTHS = small ? [256, 1024] : [16384, 65536];
const BATCH = small ? 4 : 32;
const RUNS = small ? 5 : 21;
const CHUNK = small ? 256 : 2048; // tokens appended per call

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const log = (m: string) => process.stderr.write(`gpu-check: ${m}\n`);

function timeMedian(fn: () => void, runs: number): number {
  for (let i = 0; i < 3; i++) fn(); // warm-up: grows the staging buffers, loads the kernels
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

// f16 bit patterns of ±[0.25, 2): half the upload of f32 input; the values do not change
// the work attention does.
function randomHalfRows(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s >>> 31) << 15) | ((13 + ((s >>> 28) & 3)) << 10) | ((s >>> 8) & 0x3ff);
  }
  return out;
}

function randomQueries(n: number, seed: number): Float32Array {
  const bits = randomHalfRows(n, seed);
  const q = new Float32Array(n);
  for (let i = 0; i < n; i++) q[i] = ((bits[i]! & 0x3ff) / 1024 - 0.5) * (bits[i]! & 0x8000 ? -1 : 1);
  return q;
}

function copyBandwidth() {
  if (device !== 'cuda') return null;
  // 1 GiB or a quarter of the device, whichever is smaller: far beyond any L2.
  const total = KVCache.devices().cuda.totalMemory ?? 2 ** 32;
  const bytes = Math.min(2 ** 30, Math.floor(total / 8 / 2 ** 20) * 2 ** 20);
  return native().cudaCopyBandwidth(bytes, 20);
}

function attention(memoryGBps: number | null) {
  const rows: Record<string, unknown>[] = [];
  const chunk = randomHalfRows(CHUNK * KV_HEADS * D, 1);
  const freeBytes = (KVCache.devices().cuda.totalMemory ?? Infinity) * 0.8;
  for (const format of FORMATS) {
    const options = { layers: 1, kvHeads: KV_HEADS, queryHeads: QUERY_HEADS, headDim: D, keys: format, values: format, device };
    const bytesPerToken = KVCache.bytesPerToken(options);
    // The longest shape decides how many sequences fit; shorter shapes use the same ones.
    const batch = Math.max(1, Math.min(BATCH, Math.floor(freeBytes / (bytesPerToken * LENGTHS.at(-1)!))));
    log(`attention ${format}: ${batch} sequences`);
    const cache = new KVCache(options);
    const seqs = Array.from({ length: batch }, () => cache.createSequence());
    let length = 0;
    for (const tokens of LENGTHS) {
      const t0 = performance.now();
      for (; length < tokens; length += CHUNK) for (const s of seqs) s.append(0, chunk, chunk);
      const appendSeconds = (performance.now() - t0) / 1e3;
      for (const b of [1, BATCH]) {
        const base = { format, tokens, batch: b, kvHeads: KV_HEADS, queryHeads: QUERY_HEADS, headDim: D };
        if (b > batch) {
          rows.push({ ...base, skipped: `needs ${((bytesPerToken * tokens * b) / 1e9).toFixed(1)} GB of KV, more than 80% of the device` });
          continue;
        }
        const q = randomQueries(b * QUERY_HEADS * D, tokens + b);
        const ms = b === 1
          ? timeMedian(() => seqs[0]!.attention(0, q), RUNS)
          : timeMedian(() => cache.attentionBatch(0, seqs.slice(0, b), q), RUNS);
        const kvBytes = bytesPerToken * tokens * b;
        const floorMs = memoryGBps ? (kvBytes / (memoryGBps * 1e9)) * 1e3 : null;
        rows.push({
          ...base, medianMs: ms, runs: RUNS, kvBytes, kvGBps: kvBytes / (ms / 1e3) / 1e9,
          floorMs, ratioToFloor: floorMs ? ms / floorMs : null, appendSecondsFromPreviousLength: appendSeconds,
        });
        log(`  ${format} ${tokens} tokens batch ${b}: ${ms.toFixed(3)} ms`);
      }
    }
    cache.dispose();
  }
  return rows;
}

async function compaction() {
  const layers = small ? 2 : 32, kvHeads = 8, queryHeads = 32, T = small ? 1024 : 16384, nq = small ? 32 : 128;
  log(`compaction: ${layers} layers × ${kvHeads} kv heads × ${D}, ${T} tokens`);
  const s = llmStreams({ tokens: T, kvHeads, headDim: D, queries: nq * 4, heldOut: 1 }, 3);
  // [nq, queryHeads, D]: the 4 query heads of a GQA group take 4 consecutive generated queries of their kv head.
  const q = new Float32Array(nq * queryHeads * D);
  for (let i = 0; i < nq; i++) {
    for (let qh = 0; qh < queryHeads; qh++) {
      const h = Math.floor(qh / 4), src = i * 4 + (qh % 4);
      q.set(s.queries.subarray((src * kvHeads + h) * D, (src * kvHeads + h + 1) * D), (i * queryHeads + qh) * D);
    }
  }
  const cache = new KVCache({ layers, kvHeads, queryHeads, headDim: D, keys: 'int8', values: 'int8', device });
  const seq = cache.createSequence();
  for (let l = 0; l < layers; l++) seq.append(l, s.keys, s.values);
  const compactor = new Compactor({ method: 'highest-attention', ratio: 0.1, chunkSize: small ? 256 : 4096, protect: { sinks: 4, recent: 64 } });
  const t0 = performance.now();
  const rep = await compactor.compact(seq, { queries: Array.from({ length: layers }, () => q) });
  const seconds = (performance.now() - t0) / 1e3;
  cache.dispose();
  return {
    layers, kvHeads, headDim: D, tokens: T, storage: 'int8', ratio: 0.1, chunkSize: small ? 256 : 4096, referenceQueryTokens: nq,
    streams: rep.streams.length, rowsBefore: rep.rowsBefore, rowsAfter: rep.rowsAfter, bytesFreed: rep.bytesFreed,
    totalSeconds: seconds, meanOutputError: rep.meanOutputError, maxOutputError: rep.maxOutputError,
    phaseSecondsSummedOverStreams: Object.fromEntries(Object.entries(rep.milliseconds).map(([k, v]) => [k, v / 1e3])),
  };
}

async function main() {
  if (argv.includes('--devices')) {
    process.stdout.write(`${JSON.stringify(KVCache.devices())}\n`);
    return;
  }
  const copy = copyBandwidth();
  if (copy) log(`copy bandwidth: ${copy.copyGBps.toFixed(1)} GB/s copied, ${copy.memoryGBps.toFixed(1)} GB/s of DRAM traffic`);
  const result = {
    device, small,
    copyBandwidth: copy,
    attention: attention(copy?.memoryGBps ?? null),
    compaction: await compaction(),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`gpu-check: benchmark failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
