// `npx tsx bench/lowrank.bench.ts`: low-rank storage on a Llama-3-8B-shaped layer (8 kv heads
// × 128, 32 query heads), one thread.
//  1. append with projection (rank 32, f16 coefficients): GB/s of f32 K+V input, against the
//     full-rank f16 append of the same input in the same run, and the projection's
//     multiply-adds as a fraction of this core's FMA peak (measured in the run);
//  2. decode attention at 16K tokens: rank 32 (f16 coefficients; in default blocks and in blocks
//     of the f16 cache's bytes) against f16 full rank, cold
//     (sequences rotate so the working set exceeds 256 MiB), with the read-bandwidth floor.
//  3. the basis fit (Householder + implicit QR eigensolver) at D = 64 and 128.
// Flags: --json FILE, --quick.
import { KVCache, type KVCacheOptions, type Sequence } from '../lib/index';
import { fmaPeak, markdownTable, medianSeconds, parseBenchArgs, progress, randomFloats, readBandwidth, tinybenchMedianMs, writeJson } from './support/bench-utils';

const KV_HEADS = 8;
const D = 128;
const QUERY_HEADS = 32;
const RANK = 32;
const TOKENS = 16384;
const COLD_BYTES = 256 * 2 ** 20;
const BLOCK_SIZE = 32; // the cache's default
const args = parseBenchArgs({
  command: 'npx tsx bench/lowrank.bench.ts',
  summary: 'Low-rank keys: append with projection, cold decode attention at 16K tokens, and the basis fit, against full storage.',
});
const timeMs = args.quick ? 400 : 1000;

/** A random [D][r] basis with orthonormal columns (Gram-Schmidt). */
function orthonormal(dim: number, r: number, seed: number): Float32Array {
  const g = Float64Array.from(randomFloats(dim * r, seed));
  for (let j = 0; j < r; j++) {
    for (let i = 0; i < j; i++) {
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += g[d * r + i]! * g[d * r + j]!;
      for (let d = 0; d < dim; d++) g[d * r + j] = g[d * r + j]! - dot * g[d * r + i]!;
    }
    let n = 0;
    for (let d = 0; d < dim; d++) n += g[d * r + j]! ** 2;
    for (let d = 0; d < dim; d++) g[d * r + j] = g[d * r + j]! / Math.sqrt(n);
  }
  return Float32Array.from(g);
}

const shape = { layers: 1, kvHeads: KV_HEADS, headDim: D, queryHeads: QUERY_HEADS, threads: 1 } as const;
const lowRankOptions: KVCacheOptions = { ...shape, keys: 'f16', values: 'f16', lowRank: { keys: RANK, values: RANK, calibrationRows: 0 } };
const fullOptions: KVCacheOptions = { ...shape, keys: 'f16', values: 'f16' };
const bases = Array.from({ length: KV_HEADS }, (_, h) => ({ keys: orthonormal(D, RANK, 11 + h), values: orthonormal(D, RANK, 101 + h) }));

function newSequence(cache: KVCache): Sequence {
  const seq = cache.createSequence();
  if (cache.config.lowRank) bases.forEach((b, h) => seq.setBases(0, h, b));
  return seq;
}

// ---- 1. append with projection ----
const CHUNK = 256;
const chunkKeys = randomFloats(CHUNK * KV_HEADS * D, 3);
const chunkValues = randomFloats(CHUNK * KV_HEADS * D, 5);
const inputBytes = 2 * chunkKeys.byteLength;

function appendRate(options: KVCacheOptions): number {
  const cache = new KVCache(options);
  let seq = newSequence(cache);
  let held = 0;
  const seconds = medianSeconds(() => {
    if (held >= 8192) {
      seq.free();
      seq = newSequence(cache);
      held = 0;
    }
    seq.append(0, chunkKeys, chunkValues);
    held += CHUNK;
  }, args.quick ? 200 : 600);
  cache.dispose();
  return seconds;
}

progress('append');
appendRate(lowRankOptions); // warm
const lowRankAppend = appendRate(lowRankOptions);
const fullAppend = appendRate(fullOptions);
const peak = fmaPeak();
const projectionMacs = 2 * CHUNK * KV_HEADS * D * RANK; // keys and values
const appendRows = [
  ['rank 32, f16 coefficients', (lowRankAppend * 1e3).toFixed(3), (inputBytes / lowRankAppend / 1e9).toFixed(2),
    ((projectionMacs / lowRankAppend) / peak.perSecond).toFixed(2)],
  ['full rank, f16', (fullAppend * 1e3).toFixed(3), (inputBytes / fullAppend / 1e9).toFixed(2), '-'],
];

// ---- 2. decode attention at 16K tokens, cold ----
function fill(cache: KVCache): Sequence {
  const seq = newSequence(cache);
  for (let t = 0; t < TOKENS; t += CHUNK) seq.append(0, chunkKeys, chunkValues);
  return seq;
}

async function decode(options: KVCacheOptions, label: string): Promise<{ ms: number; bytes: number }> {
  const cache = new KVCache(options);
  const first = fill(cache);
  const bytes = cache.stats().bytesUsed;
  const seqs = [first];
  while (seqs.length * bytes < COLD_BYTES) {
    progress(`decode ${label}: filling ${seqs.length + 1}`);
    seqs.push(fill(cache));
  }
  const q = randomFloats(QUERY_HEADS * D, 9);
  const out = new Float32Array(QUERY_HEADS * D);
  let i = 0;
  const ms = await tinybenchMedianMs(label, () => {
    seqs[i]!.attention(0, q, { out });
    i = (i + 1) % seqs.length;
  }, timeMs);
  cache.dispose();
  return { ms, bytes };
}

async function main(): Promise<void> {
const lowRankDecode = await decode(lowRankOptions, 'rank 32');
const fullDecode = await decode(fullOptions, 'f16 full rank');
// The same rank-32 rows in blocks of the f16 cache's bytes: rows of a quarter of the bytes,
// four times as many per block, so the per-block work is spread as in the f16 cache.
const lowRankWideBlocks = await decode({ ...lowRankOptions, blockSize: 4 * BLOCK_SIZE }, 'rank 32, wide blocks');
progress('bandwidth');
const bandwidth = readBandwidth(2 ** 30, 1);
const decodeLabels = ['f16 full rank', 'rank 32, f16 coefficients', `rank 32, f16 coefficients, blockSize ${4 * BLOCK_SIZE} (the f16 cache's block bytes)`];
const decodeRows = [fullDecode, lowRankDecode, lowRankWideBlocks].map((r, i) => [
  decodeLabels[i]!,
  (r.bytes / 2 ** 20).toFixed(1), r.ms.toFixed(3), ((r.bytes / (r.ms / 1e3)) / 1e9).toFixed(2),
  (r.bytes / bandwidth * 1e3 / r.ms).toFixed(2), (fullDecode.ms / r.ms).toFixed(2),
]);

// ---- 3. basis fit ----
const fitRows: (string | number)[][] = [];
for (const dim of [64, 128]) {
  const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: dim, keys: 'f16', values: 'f16', threads: 1, lowRank: { keys: dim / 4, values: dim / 4, calibrationRows: 0 } });
  const rows = randomFloats(256 * dim, 17);
  const seqs = Array.from({ length: 7 }, () => {
    const s = cache.createSequence();
    s.append(0, rows, rows);
    return s;
  });
  let k = 0;
  // fitBases fits keys and values: two eigensolves, plus re-projecting 256 rows
  const seconds = medianSeconds(() => seqs[k++]!.fitBases(), 7);
  fitRows.push([dim, dim / 4, (seconds / 2 * 1e3).toFixed(2)]);
  cache.dispose();
}
progress('');

console.log(`read bandwidth (1 thread): ${(bandwidth / 1e9).toFixed(2)} GB/s; FMA peak (1 thread): ${(peak.perSecond / 1e9).toFixed(1)} G multiply-adds/s\n`);
console.log('Append of 256 tokens × 8 kv heads × 128 (f32 keys + values = 2 MiB), median, 1 thread:\n');
console.log(markdownTable(['cache', 'ms', 'GB/s of f32 input', 'projection MACs / FMA peak'], appendRows));
console.log(`\nDecode attention, ${TOKENS} tokens, 32 query heads, cold, 1 thread:\n`);
console.log(markdownTable(['cache', 'MiB per sequence', 'median ms', 'GB/s read', 'floor / time', 'speed-up vs f16'], decodeRows));
console.log('\nBasis fit (Householder + implicit QR), 256 rows, per basis:\n');
console.log(markdownTable(['head_dim', 'rank', 'ms'], fitRows));
writeJson(args.json, { bandwidth, fmaPeak: peak, append: { lowRankSeconds: lowRankAppend, fullSeconds: fullAppend, inputBytes }, decode: { lowRank: lowRankDecode, lowRankWideBlocks, full: fullDecode }, fit: fitRows });
}

void main();
