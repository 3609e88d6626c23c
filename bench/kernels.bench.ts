// `npm run bench`: the CPU attention kernels against the machine's floors, measured in the
// same run. One Llama-3-8B-shaped layer (8 kv heads × 128, 32 query heads: GQA 4), 16K tokens.
//
// Floors: read bandwidth = the faster of two read loops over 1 GiB mapped like the block pool
// (huge pages; readFloor: eight 512-bit accumulators in registers, or kept in memory so the
// loads are paced) with the same thread count; arithmetic = the f32 multiply-adds of
// exact attention (q·k and p·v: 2 × 32 × 128 per token) at the peak FMA rate of fmaProbe
// (twice the one-thread rate for two threads: one core each). Every figure is a ratio to its
// floor from the same round; the suite runs --rounds times (default 3) and reports the median
// ratio of each figure, so a noisy neighbour moves floors and kernels together.
//
// Figures: exact decode f16/int8/int4 (1 thread, × max(floors)); precision 'fast' int8/int4
// (× read floor); exact f16 with 2 threads (× the 2-thread max floor); causal prefill, Tq = 256
// over 16K rows (fraction of peak FMA); a serving batch (attentionBatch over 64 sequences of
// 512–8K tokens, one decode query each, 2 threads: × the 2-thread max floor, and token·heads/s).
// Decode is cold: each call goes to the next of enough
// sequences that the working set exceeds 256 MiB.
// Flags: --json FILE (adds package version, commit and CPU model), --rounds N, --quick.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KVCache, type Precision, type Sequence, type Storage } from '../lib/index';
import { positiveInt } from '../examples/shared/cli';
import { checkedArgs, fmaPeak, markdownTable, medianSeconds, parseBenchArgs, progress, randomFloats, readBandwidth, tinybenchMedianMs, writeJson } from './support/bench-utils';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const QUERY_HEADS = 32;
const GROUP = 32;
const TOKENS = 16384;
const PREFILL_TQ = 256;
const COLD_BYTES = 256 * 2 ** 20;
const BATCH_SEQUENCES = 64;
// Sequence i of the batch holds 512 + i × 7680 / 63 tokens (512 … 8192, 278K in all).
const batchLength = (i: number) => 512 + Math.round((i * (8192 - 512)) / (BATCH_SEQUENCES - 1));

const args = parseBenchArgs({
  command: 'npm run bench --',
  summary: 'CPU attention kernels (exact and fast decode, causal prefill) as ratios to the read-bandwidth and peak multiply-add floors measured in the same run.',
  options: {
    rounds: { type: 'string', value: 'N', description: 'rounds of floors and kernels; the median ratio is reported (default 3)' },
    only: { type: 'string', value: 'TEXT', description: 'run only the figures whose id contains TEXT (e.g. prefill, batch)' },
  },
});
const rounds = checkedArgs(() => positiveInt('rounds', args.values.rounds, 3));
const timeMs = args.quick ? 300 : 600;

interface Figure {
  id: string;
  storage: Storage;
  precision: Precision;
  threads: number;
  kind: 'decode' | 'prefill' | 'batch';
  /** which floor the target is stated against */
  against: 'max' | 'read' | 'fma';
  /** none: reported only */
  target?: number;
}

const ALL_FIGURES: Figure[] = [
  { id: 'decode f16 exact', storage: 'f16', precision: 'exact', threads: 1, kind: 'decode', against: 'max', target: 1.5 },
  { id: 'decode int8 exact', storage: 'int8', precision: 'exact', threads: 1, kind: 'decode', against: 'max', target: 1.5 },
  { id: 'decode int4 exact', storage: 'int4', precision: 'exact', threads: 1, kind: 'decode', against: 'max', target: 1.5 },
  { id: 'decode int8 fast', storage: 'int8', precision: 'fast', threads: 1, kind: 'decode', against: 'read', target: 1.3 },
  { id: 'decode int4 fast', storage: 'int4', precision: 'fast', threads: 1, kind: 'decode', against: 'read', target: 1.6 },
  { id: 'decode f16 exact, 2 threads', storage: 'f16', precision: 'exact', threads: 2, kind: 'decode', against: 'max', target: 1.3 },
  { id: 'prefill f16 Tq 256', storage: 'f16', precision: 'exact', threads: 1, kind: 'prefill', against: 'fma', target: 0.5 },
  { id: 'batch f16 exact, 64 seqs 512–8K, 2 threads', storage: 'f16', precision: 'exact', threads: 2, kind: 'batch', against: 'max' },
];

const FIGURES = ALL_FIGURES.filter((f) => args.values.only === undefined || f.id.includes(args.values.only));

interface Setup { cache: KVCache; seqs: Sequence[]; bytesPerCall: number; multiplyAdds: number; tokens: number }

function fillSequences(storage: Storage, threads: number, count: number): Setup {
  const cache = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, keys: storage,
    values: storage, groupSize: GROUP, threads });
  const chunkTokens = 1024;
  const chunk = randomFloats(chunkTokens * KV_HEADS * HEAD_DIM, 7);
  const seqs: Sequence[] = [];
  for (let s = 0; s < count; s++) {
    const seq = cache.createSequence();
    for (let t = 0; t < TOKENS; t += chunkTokens) seq.append(0, chunk, chunk);
    seqs.push(seq);
  }
  // Bytes a call reads: the whole pool of one sequence (rows, scales, beta, positions).
  return { cache, seqs, bytesPerCall: cache.stats().bytesUsed / count, multiplyAdds: TOKENS * 2 * QUERY_HEADS * HEAD_DIM, tokens: TOKENS };
}

// One cache holding the batch's sequences (each a different length); a call reads them all.
function fillBatch(storage: Storage, threads: number): Setup {
  const cache = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, keys: storage,
    values: storage, groupSize: GROUP, threads });
  const chunk = randomFloats(8192 * KV_HEADS * HEAD_DIM, 7);
  const seqs: Sequence[] = [];
  let tokens = 0;
  for (let i = 0; i < BATCH_SEQUENCES; i++) {
    const seq = cache.createSequence();
    const n = batchLength(i);
    const rows = chunk.subarray(0, n * KV_HEADS * HEAD_DIM);
    seq.append(0, rows, rows);
    seqs.push(seq);
    tokens += n;
  }
  return { cache, seqs, bytesPerCall: cache.stats().bytesUsed, multiplyAdds: tokens * 2 * QUERY_HEADS * HEAD_DIM, tokens };
}

function setupFor(f: Figure): Setup {
  if (f.kind === 'batch') return fillBatch(f.storage, f.threads);
  if (f.kind === 'prefill') {
    const s = fillSequences(f.storage, f.threads, 1);
    // Query t of the chunk sees TOKENS - Tq + t + 1 rows (causal).
    let visible = 0;
    for (let t = 0; t < PREFILL_TQ; t++) visible += TOKENS - PREFILL_TQ + t + 1;
    return { ...s, multiplyAdds: visible * 2 * QUERY_HEADS * HEAD_DIM };
  }
  const perSequence = KVCache.bytesPerToken({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, keys: f.storage, values: f.storage, groupSize: GROUP }) * TOKENS;
  return fillSequences(f.storage, f.threads, Math.max(2, Math.ceil((COLD_BYTES * 1.25) / perSequence)));
}

async function timeFigure(f: Figure, s: Setup): Promise<number> {
  if (f.kind === 'batch') {
    const queries = randomFloats(s.seqs.length * QUERY_HEADS * HEAD_DIM, 11);
    const out = new Float32Array(queries.length);
    return tinybenchMedianMs(f.id, () => s.cache.attentionBatch(0, s.seqs, queries, { out, precision: f.precision }), timeMs);
  }
  const tq = f.kind === 'prefill' ? PREFILL_TQ : 1;
  const query = randomFloats(tq * QUERY_HEADS * HEAD_DIM, 11);
  const out = new Float32Array(query.length);
  const options = { out, precision: f.precision };
  let next = 0;
  const call = () => {
    s.seqs[next]!.attention(0, query, options);
    next = (next + 1) % s.seqs.length;
  };
  // A prefill call takes seconds: a few timed calls, not tinybench's 64 iterations.
  if (f.kind === 'prefill') return medianSeconds(call, args.quick ? 1 : 3) * 1e3;
  return tinybenchMedianMs(f.id, call, timeMs);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

function machine() {
  const root = path.resolve(__dirname, '..');
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    if (execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8' }).trim()) commit += '+changes';
  } catch { /* not a checkout */ }
  const version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  return { version, commit, cpu: os.cpus()[0]?.model ?? 'unknown', simd: KVCache.devices().cpu.simd, hardwareThreads: os.availableParallelism(), node: process.version };
}

interface Round { readGBs: Record<number, number>; fmaGs: number; ms: Record<string, number> }

async function main(): Promise<void> {
  const m = machine();
  console.log(`kvcompact CPU kernels vs floors — ${m.cpu}, SIMD ${m.simd}, kvcompact ${m.version} @ ${m.commit.slice(0, 12)}`);
  const setups = new Map<string, Setup>();
  for (const f of FIGURES) {
    progress(`filling: ${f.id}`);
    const key = `${f.storage}-${f.threads}-${f.kind}`;
    if (!setups.has(key)) setups.set(key, setupFor(f));
  }
  const results: Round[] = [];
  for (let r = 0; r < rounds; r++) {
    progress(`round ${r + 1}/${rounds}: floors`);
    const readGBs: Record<number, number> = { 1: readBandwidth(2 ** 30, 1) / 1e9, 2: readBandwidth(2 ** 30, 2) / 1e9 };
    const fmaGs = fmaPeak().perSecond / 1e9;
    const ms: Record<string, number> = {};
    for (const f of FIGURES) {
      progress(`round ${r + 1}/${rounds}: ${f.id}`);
      ms[f.id] = await timeFigure(f, setups.get(`${f.storage}-${f.threads}-${f.kind}`)!);
    }
    results.push({ readGBs, fmaGs, ms });
  }
  progress('');
  for (const s of setups.values()) s.cache.dispose();

  const rows = FIGURES.map((f) => {
    const s = setups.get(`${f.storage}-${f.threads}-${f.kind}`)!;
    const perRound = results.map((round) => {
      const t = round.ms[f.id]! / 1e3;
      const readFloor = s.bytesPerCall / (round.readGBs[f.threads]! * 1e9);
      const fmaFloor = s.multiplyAdds / (round.fmaGs * 1e9 * f.threads);
      const ratio = f.against === 'fma' ? fmaFloor / t : t / (f.against === 'read' ? readFloor : Math.max(readFloor, fmaFloor));
      return { ms: t * 1e3, readFloorMs: readFloor * 1e3, fmaFloorMs: fmaFloor * 1e3, ratio };
    });
    const ratio = median(perRound.map((p) => p.ratio));
    const met = f.target === undefined ? undefined : f.against === 'fma' ? ratio >= f.target : ratio <= f.target;
    // token·kv-head rows attended per second (× the GQA group for token·query-heads)
    const tokenHeadsPerSecond = (s.tokens * KV_HEADS) / (median(perRound.map((p) => p.ms)) / 1e3);
    return { ...f, mibPerCall: s.bytesPerCall / 2 ** 20, medianMs: median(perRound.map((p) => p.ms)),
      readFloorMs: median(perRound.map((p) => p.readFloorMs)), fmaFloorMs: median(perRound.map((p) => p.fmaFloorMs)),
      ratios: perRound.map((p) => p.ratio), ratio, met, tokenHeadsPerSecond };
  });

  const fmt = (x: number, d = 3) => x.toFixed(d);
  console.log(`\nFloors (median of ${rounds} rounds): read ${fmt(median(results.map((r) => r.readGBs[1]!)), 1)} GB/s (1 thread), ` +
    `${fmt(median(results.map((r) => r.readGBs[2]!)), 1)} GB/s (2 threads); peak FMA ${fmt(median(results.map((r) => r.fmaGs)), 1)} G f32 multiply-adds/s (1 thread)\n`);
  console.log(markdownTable(
    ['figure', 'threads', 'MiB / call', 'median ms', 'read floor ms', 'FMA floor ms', 'ratio (median; per round)', 'against', 'target', 'met'],
    rows.map((r) => [r.id, r.threads, fmt(r.mibPerCall, 1), fmt(r.medianMs), fmt(r.readFloorMs), fmt(r.fmaFloorMs),
      `**${fmt(r.ratio, 2)}** (${r.ratios.map((x) => fmt(x, 2)).join(', ')})`,
      r.against === 'fma' ? 'fraction of peak FMA' : r.against === 'read' ? '× read floor' : '× max(floors)',
      r.target === undefined ? '—' : `${r.against === 'fma' ? '≥' : '≤'} ${r.target}`, r.met === undefined ? '—' : r.met ? 'yes' : 'no']),
  ));
  for (const r of rows.filter((x) => x.kind === 'batch')) {
    console.log(`\n${r.id}: ${fmt(r.tokenHeadsPerSecond / 1e6, 1)} M token·kv-heads/s ` +
      `(${fmt((r.tokenHeadsPerSecond * QUERY_HEADS) / KV_HEADS / 1e6, 1)} M token·query-heads/s), ${fmt(r.ratio, 2)}× the 2-thread max floor`);
  }
  writeJson(args.json, { machine: m, rounds: results, figures: rows });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
