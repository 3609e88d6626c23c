// `npx tsx bench/sparse.bench.ts`: dynamic sparse decode against full attention, one
// Llama-3-8B-shaped layer (8 kv heads × 128, 32 query heads: GQA 4), f16 with key summaries,
// at 16K and 64K tokens: median decode time of full attention and of sparse attention reading
// 1/8 and 1/16 of the rows (same process, same cache), the ratio, the time of the block
// selection alone, and the read-bandwidth floor of the bytes each reads. Recall: the share of
// the full attention mass (accumulateScores of the dense call) inside the blocks sparse attention
// reads, per kv head and query, on two synthetic LLM-like worlds: test/compactor/llm-stream.ts
// (sink, recent rows, retrieval of salient rows anywhere) and bench/support/synthetic-streams.ts
// (sink, local window, diffuse noise logits over every row).
// --rope adds the same worlds on a cache holding keys before RoPE (cache option `rope`, llama
// RoPE theta 500000 over the whole head): keys are stored rotated back by their positions and the
// queries by theirs, so the logits after the cache's RoPE are the plain world's; the rows show
// what the rotation costs (full and sparse) and that recall does not change.
// Flags: --tokens 16384,65536  --queries 8  --threads 2  --rope  --json FILE  --quick (see --help)
import { KVCache, type Sequence } from '../lib/index';
import { llmStreams } from '../test/compactor/llm-stream';
import { positiveInt } from '../examples/shared/cli';
import { checkedArgs, markdownTable, medianSeconds, parseBenchArgs, progress, readBandwidth, writeJson } from './support/bench-utils';
import { syntheticKV, syntheticQueries } from './support/synthetic-streams';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const QUERY_HEADS = 32;
const GROUP = QUERY_HEADS / KV_HEADS;

const args = parseBenchArgs({
  command: 'npx tsx bench/sparse.bench.ts',
  summary: 'Dynamic sparse decode against full attention (Llama-3-8B-shaped layer, f16 with key summaries): time, selection cost, recall.',
  options: {
    tokens: { type: 'string', value: 'N[,N...]', description: 'context lengths (default 16384,65536; --quick 16384)' },
    queries: { type: 'string', value: 'N', description: 'decode queries per length (default 8)' },
    threads: { type: 'string', value: 'N', description: 'attention threads (default 2)' },
    rope: { type: 'boolean', description: 'also run every world on a cache with keys before RoPE' },
  },
});
const { tokenCounts, queryCount, threads } = checkedArgs(() => ({
  tokenCounts: (args.values.tokens ?? (args.quick ? '16384' : '16384,65536')).split(',').map((t) => positiveInt('tokens', t, 0)),
  queryCount: positiveInt('queries', args.values.queries, 8),
  threads: positiveInt('threads', args.values.threads, 2),
}));
const withRope = args.values.rope === true;
const fractions = [1 / 8, 1 / 16];
const RULE = { sinks: 4, recent: 64 };
const ROPE = { theta: 500000, dims: HEAD_DIM, style: 'interleaved' } as const;

interface World {
  name: string;
  keys: Float32Array; // [T, kvHeads, D]
  values: Float32Array;
  queries: Float32Array[]; // each [queryHeads, D]: one decode step
}

function llmWorld(T: number): World {
  // One query per kv head per draw: GROUP draws give each query head of a group its own query.
  const s = llmStreams({ tokens: T, kvHeads: KV_HEADS, headDim: HEAD_DIM, queries: 1, heldOut: queryCount * GROUP }, 7);
  const queries: Float32Array[] = [];
  for (let i = 0; i < queryCount; i++) {
    const q = new Float32Array(QUERY_HEADS * HEAD_DIM);
    for (let h = 0; h < KV_HEADS; h++) {
      for (let g = 0; g < GROUP; g++) {
        const src = ((i * GROUP + g) * KV_HEADS + h) * HEAD_DIM;
        q.set(s.heldOut.subarray(src, src + HEAD_DIM), (h * GROUP + g) * HEAD_DIM);
      }
    }
    queries.push(q);
  }
  return { name: 'retrieval (llm-stream)', keys: s.keys, values: s.values, queries };
}

function diffuseWorld(T: number): World {
  const s = syntheticKV({ tokens: T, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS }, 11);
  const queries: Float32Array[] = [];
  for (let i = 0; i < queryCount; i++) queries.push(syntheticQueries(s, 1, 100 + i));
  return { name: 'local + diffuse (synthetic-streams)', keys: s.keys, values: s.values, queries };
}

/**
 * Rotates rows of head vectors back by RoPE: row t (kvHeads or queryHeads vectors) by -position(t),
 * in float64 then rounded to f32, so that the cache's RoPE at the same positions gives the rows back.
 */
function unrope(x: Float32Array, heads: number, position: (t: number) => number): Float32Array {
  const y = new Float32Array(x.length);
  const half = HEAD_DIM / 2;
  const freq = Float64Array.from({ length: half }, (_, i) => Math.pow(ROPE.theta, (-2 * i) / ROPE.dims));
  const c = new Float64Array(half);
  const sn = new Float64Array(half);
  const rows = x.length / (heads * HEAD_DIM);
  for (let t = 0; t < rows; t++) {
    const p = position(t);
    for (let i = 0; i < half; i++) {
      c[i] = Math.cos(-p * freq[i]!);
      sn[i] = Math.sin(-p * freq[i]!);
    }
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * HEAD_DIM;
      for (let i = 0; i < half; i++) {
        const x0 = x[o + 2 * i]!, x1 = x[o + 2 * i + 1]!;
        y[o + 2 * i] = x0 * c[i]! - x1 * sn[i]!;
        y[o + 2 * i + 1] = x0 * sn[i]! + x1 * c[i]!;
      }
    }
  }
  return y;
}

/** The world as a rope cache must receive it: keys at positions 0..T-1, decode queries at T-1. */
function ropeWorld(w: World, T: number): World {
  return { name: w.name, keys: unrope(w.keys, KV_HEADS, (t) => t), values: w.values,
    queries: w.queries.map((q) => unrope(q, QUERY_HEADS, () => T - 1)) };
}

function load(cache: KVCache, w: World, T: number): Sequence {
  const seq = cache.createSequence();
  const chunk = 4096;
  for (let t = 0; t < T; t += chunk) {
    const n = Math.min(chunk, T - t);
    const a = t * KV_HEADS * HEAD_DIM;
    const b = (t + n) * KV_HEADS * HEAD_DIM;
    seq.append(0, w.keys.subarray(a, b), w.values.subarray(a, b));
  }
  return seq;
}

/**
 * Mean and minimum share of the dense attention mass inside the picked blocks, over heads ×
 * queries, and the mean share of the best possible pick of as many blocks (the blocks holding
 * the most mass: what an oracle selection would reach on this world).
 */
function recall(seq: Sequence, w: World, tokens: number, blockSize: number): { mean: number; min: number; oracle: number } {
  let sum = 0;
  let min = Infinity;
  let oracle = 0;
  let n = 0;
  for (const q of w.queries) {
    seq.resetScores();
    seq.attention(0, q, { accumulateScores: true });
    const sel = seq.sparseSelection(0, q, { tokens, ...RULE });
    for (let h = 0; h < KV_HEADS; h++) {
      const scores = seq.scores(0, h);
      let total = 0;
      for (let r = 0; r < scores.length; r++) total += scores[r]!;
      let inside = 0;
      for (const b of sel[h]!.blocks) for (let r = b * blockSize; r < Math.min(scores.length, (b + 1) * blockSize); r++) inside += scores[r]!;
      const share = inside / total;
      const mass = new Float64Array(Math.ceil(scores.length / blockSize));
      for (let r = 0; r < scores.length; r++) mass[Math.floor(r / blockSize)]! += scores[r]!;
      const best = Array.from(mass).sort((a, b) => b - a).slice(0, sel[h]!.blocks.length);
      oracle += best.reduce((a, b) => a + b, 0) / total;
      sum += share;
      min = Math.min(min, share);
      n++;
    }
  }
  return { mean: sum / n, min, oracle: oracle / n };
}

interface Row {
  world: string;
  tokens: number;
  method: string;
  medianMs: number;
  speedup: number;
  selectMs: number;
  bytesRead: number;
  floorMs: number;
  recallMean: number;
  recallMin: number;
  oracleRecall: number;
}

async function main(): Promise<void> {
  progress(`read bandwidth floor (${threads} threads)...`);
  const bandwidth = readBandwidth(1 << 30, threads);
  const rows: Row[] = [];
  for (const T of tokenCounts) {
    for (const make of [llmWorld, diffuseWorld]) {
      progress(`${T} tokens: generating the ${make === llmWorld ? 'retrieval' : 'diffuse'} world...`);
      const plainWorld = make(T);
      for (const cacheKind of withRope ? ['plain', 'rope'] as const : ['plain'] as const) {
        const w = cacheKind === 'rope' ? ropeWorld(plainWorld, T) : plainWorld;
        const tag = cacheKind === 'rope' ? ' (rope)' : '';
        const cache = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, keys: 'f16', values: 'f16',
          keySummaries: true, threads, ...(cacheKind === 'rope' ? { rope: ROPE } : {}) });
        const seq = load(cache, w, T);
        const B = cache.config.blockSize;
        // stats().blockBytes counts a block with its key-summary entry; attention reads only the block.
        const plain = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, keys: 'f16', values: 'f16', maxBytes: 1 << 20 });
        const blockBytes = plain.stats().blockBytes;
        const summaryBytes = cache.stats().blockBytes - blockBytes;
        plain.dispose();
        const out = new Float32Array(QUERY_HEADS * HEAD_DIM);
        const q = w.queries[0]!;
        // Each timed call takes the next decode query, so sparse calls do not keep rereading one
        // set of picked blocks that could stay in the last-level cache while full attention streams.
        let turn = 0;
        const next = (): Float32Array => w.queries[turn++ % w.queries.length]!;
        const runs = T >= 65536 ? 15 : 41;
        progress(`${T} tokens, ${w.name}: timing...`);
        seq.attention(0, q, { out });
        const fullMs = medianSeconds(() => seq.attention(0, next(), { out }), runs) * 1e3;
        const fullBytes = KV_HEADS * Math.ceil(T / B) * blockBytes;
        rows.push({ world: w.name, tokens: T, method: `full${tag}`, medianMs: fullMs, speedup: 1, selectMs: 0, bytesRead: fullBytes,
          floorMs: fullBytes / bandwidth * 1e3, recallMean: 1, recallMin: 1, oracleRecall: 1 });
        for (const f of fractions) {
          const tokens = Math.round(T * f);
          const sparse = { tokens, ...RULE };
          seq.attention(0, q, { out, sparse });
          const ms = medianSeconds(() => seq.attention(0, next(), { out, sparse }), runs) * 1e3;
          const selectMs = medianSeconds(() => seq.sparseSelection(0, next(), sparse), runs) * 1e3;
          const picked = seq.sparseSelection(0, q, sparse).reduce((n, s) => n + s.blocks.length, 0);
          // Picked blocks in full, plus every block's summary entry for the bounds.
          const bytes = picked * blockBytes + KV_HEADS * Math.ceil(T / B) * summaryBytes;
          progress(`${T} tokens, ${w.name}: recall at 1/${1 / f}...`);
          const r = recall(seq, w, tokens, B);
          rows.push({ world: w.name, tokens: T, method: `sparse 1/${1 / f}${tag}`, medianMs: ms, speedup: fullMs / ms, selectMs,
            bytesRead: bytes, floorMs: bytes / bandwidth * 1e3, recallMean: r.mean, recallMin: r.min, oracleRecall: r.oracle });
        }
        seq.free();
        cache.dispose();
      }
    }
  }
  console.log(`\nDecode step of one layer (8 kv heads × 128, GQA 4, f16 + key summaries, blockSize 32), ${threads} threads; ` +
    `read bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s; sinks ${RULE.sinks}, recent ${RULE.recent}; recall over ${queryCount} queries × 8 kv heads\n`);
  console.log(markdownTable(['world', 'tokens', 'method', 'median ms', 'speed-up vs full', 'selection ms', 'MB read', 'floor ms', 'recall mean', 'recall min', 'oracle recall'],
    rows.map((r) => [r.world, r.tokens, r.method, r.medianMs.toFixed(2), r.speedup.toFixed(2) + '×', r.selectMs.toFixed(2),
      (r.bytesRead / 1e6).toFixed(1), r.floorMs.toFixed(2), r.recallMean.toFixed(4), r.recallMin.toFixed(4), r.oracleRecall.toFixed(4)])));
  writeJson(args.json, { bandwidth, threads, rows });
}

void main();
