// Quantization benchmarks, one thread, Llama-3-8B shapes (8 kv heads × 128, 32 query heads):
//   append   fused convert/rotate/quantize of 256 MiB of f32 rows (keys + values) into f16 /
//            int8 / int4 storage, with and without key rotation: median time, GB/s of f32
//            input, and the ratio to a plain copy of the same bytes (TypedArray.set) in this run.
//   decode   attention of one query token over 16K tokens, int8 / int4 against f16, cold (the
//            sequences rotate so the working set exceeds 256 MiB): median time, GB/s of KV
//            bytes read (whole blocks: data + scales + beta + positions), and the ratio to the
//            read-bandwidth floor (native read passes over 1 GiB mapped like the pool, readFloor).
//            Beside it, the arithmetic floor: exact f32 attention costs 2 × (query heads) ×
//            headDim multiply-adds per token whatever the storage, timed against this
//            thread's peak multiply-add rate (fmaProbe) in the same run.
// Usage: npx tsx bench/quantization.bench.ts [--part append|decode] [--json FILE] [--quick]
import { KVCache, type Sequence, type Storage } from '../lib/index';
import { fmaPeak, markdownTable, parseBenchArgs, progress, randomFloats, readBandwidth, tinybenchMedianMs, writeJson } from './support/bench-utils';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const QUERY_HEADS = 32;
const GROUP = 32;
const MIB = 2 ** 20;

const args = parseBenchArgs({
  command: 'npx tsx bench/quantization.bench.ts',
  summary: 'Quantization, one thread: fused append into f16/int8/int4 (rotated or not) against a copy, and decode attention against the read floor.',
  options: { part: { type: 'string', choices: ['all', 'append', 'decode'], description: 'one part only (default all)' } },
});
const appendBytes = (args.quick ? 64 : 256) * MIB; // keys + values, f32
const coldBytes = 256 * MIB;
const decodeTokens = 16384;
const timeMs = args.quick ? 300 : 1500;

// ---- append -----------------------------------------------------------------------------

interface AppendRow {
  storage: Storage;
  rotate: boolean;
  medianMs: number;
  gbPerSecond: number;
  ratioToCopy: number;
}

async function appendBench(): Promise<{ copyGBs: number; rows: AppendRow[] }> {
  const tokens = appendBytes / (2 * 4 * KV_HEADS * HEAD_DIM);
  const keys = randomFloats(appendBytes / 8, 1);
  const values = randomFloats(appendBytes / 8, 2);
  const copyK = new Float32Array(keys.length);
  const copyV = new Float32Array(values.length);
  progress('append: copy baseline');
  const copyMs = await tinybenchMedianMs('copy', () => {
    copyK.set(keys);
    copyV.set(values);
  }, timeMs);
  const copyGBs = appendBytes / (copyMs / 1e3) / 1e9;
  const rows: AppendRow[] = [];
  for (const storage of ['f16', 'int8', 'int4'] as Storage[]) {
    for (const rotate of [false, true]) {
      progress(`append: ${storage}${rotate ? ' rotated' : ''}`);
      const cache = new KVCache({ layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS,
        keys: storage, values: storage, groupSize: GROUP, rotate, threads: 1 });
      // The first append commits the pool pages; later ones reuse the freed blocks, so the
      // timing sees the kernel and memory traffic, not page faults.
      cache.createSequence().append(0, keys, values);
      let seq: Sequence | undefined;
      const ms = await tinybenchMedianMs(`append ${storage}`, () => {
        seq?.free();
        seq = cache.createSequence();
        seq.append(0, keys, values);
      }, timeMs);
      if (seq!.length(0, 0) !== tokens) throw new Error('append lost rows');
      cache.dispose();
      const gbPerSecond = appendBytes / (ms / 1e3) / 1e9;
      rows.push({ storage, rotate, medianMs: ms, gbPerSecond, ratioToCopy: gbPerSecond / copyGBs });
    }
  }
  return { copyGBs, rows };
}

// ---- decode attention ---------------------------------------------------------------------

interface DecodeRow {
  storage: Storage;
  sequences: number;
  bytesPerCall: number;
  medianMs: number;
  gbPerSecond: number;
  floorMs: number;
  ratioToFloor: number;
  ratioToF16: number;
}

async function decodeBench(floor: number): Promise<DecodeRow[]> {
  const chunkTokens = 1024;
  const chunk = randomFloats(chunkTokens * KV_HEADS * HEAD_DIM, 3);
  const query = randomFloats(QUERY_HEADS * HEAD_DIM, 4);
  const out = new Float32Array(query.length);
  const rows: DecodeRow[] = [];
  for (const storage of ['f16', 'int8', 'int4'] as Storage[]) {
    const options = { layers: 1, kvHeads: KV_HEADS, headDim: HEAD_DIM, queryHeads: QUERY_HEADS, keys: storage,
      values: storage, groupSize: GROUP, threads: 1 } as const;
    const perSequence = KVCache.bytesPerToken(options) * decodeTokens;
    const sequences = Math.max(2, Math.ceil((coldBytes * 1.25) / perSequence));
    progress(`decode: ${storage}, filling ${sequences} sequences`);
    const cache = new KVCache(options);
    const seqs: Sequence[] = [];
    for (let s = 0; s < sequences; s++) {
      const seq = cache.createSequence();
      for (let t = 0; t < decodeTokens; t += chunkTokens) seq.append(0, chunk, chunk);
      seqs.push(seq);
    }
    const bytesPerCall = cache.stats().bytesUsed / sequences;
    let next = 0;
    progress(`decode: ${storage}`);
    const ms = await tinybenchMedianMs(`decode ${storage}`, () => {
      seqs[next]!.attention(0, query, { out });
      next = (next + 1) % sequences;
    }, timeMs);
    cache.dispose();
    const floorMs = (bytesPerCall / floor) * 1e3;
    rows.push({ storage, sequences, bytesPerCall, medianMs: ms, gbPerSecond: bytesPerCall / (ms / 1e3) / 1e9, floorMs,
      ratioToFloor: ms / floorMs, ratioToF16: 0 });
  }
  const f16 = rows.find((r) => r.storage === 'f16')!.medianMs;
  for (const r of rows) r.ratioToF16 = r.medianMs / f16;
  return rows;
}

/** The two floors decode is compared against, measured in this run. */
interface Floors {
  readBytesPerSecond: number;
  fma: { perSecond: number; lanes: number };
}

async function main(): Promise<void> {
  const simd = KVCache.devices().cpu.simd;
  const part = args.values.part ?? 'all';
  const append = part === 'decode' ? undefined : await appendBench();
  let floors: Floors | undefined;
  let decode: DecodeRow[] | undefined;
  if (part !== 'append') {
    progress('read floor');
    const readBytesPerSecond = readBandwidth(2 ** 30, 1);
    progress('arithmetic floor');
    floors = { readBytesPerSecond, fma: fmaPeak() };
    decode = await decodeBench(readBytesPerSecond);
  }
  progress('');
  console.log(`\nkvcompact quantization benchmarks (SIMD ${simd}, 1 thread, 8 kv heads × 128, group ${GROUP})`);
  if (append) printAppend(append);
  if (decode && floors) printDecode(decode, floors);
  writeJson(args.json, { simd, floorBytesPerSecond: floors?.readBytesPerSecond, fmaPerSecond: floors?.fma.perSecond, append, decode });
}

function printAppend(append: Awaited<ReturnType<typeof appendBench>>): void {
  const fmt = (x: number, d = 2) => x.toFixed(d);
  console.log(`\nAppend of ${appendBytes / MIB} MiB of f32 keys + values (${appendBytes / (8 * KV_HEADS * HEAD_DIM)} tokens);` +
    ` copy baseline (TypedArray.set of the same bytes): ${fmt(append.copyGBs)} GB/s\n`);
  console.log(markdownTable(['storage', 'rotation', 'median ms', 'GB/s of f32 input', '× copy'],
    append.rows.map((r) => [r.storage, r.rotate ? 'keys' : '-', fmt(r.medianMs, 1), fmt(r.gbPerSecond), fmt(r.ratioToCopy)])));
}

function printDecode(decode: DecodeRow[], { readBytesPerSecond: floor, fma }: Floors): void {
  const fmt = (x: number, d = 2) => x.toFixed(d);
  console.log(`\nDecode attention, ${decodeTokens} tokens, GQA 4, cold; read floor (readFloor over 1 GiB, 1 thread): ` +
    `${fmt(floor / 1e9)} GB/s\n`);
  console.log(markdownTable(['storage', 'sequences', 'MiB read / call', 'median ms', 'GB/s read', 'floor ms', '× floor', '× f16 time'],
    decode.map((r) => [r.storage, r.sequences, fmt(r.bytesPerCall / MIB, 1), fmt(r.medianMs, 3), fmt(r.gbPerSecond),
      fmt(r.floorMs, 3), fmt(r.ratioToFloor), fmt(r.ratioToF16)])));
  // Exact f32 attention: q·k and p·v, one multiply-add per query head, element and token.
  const multiplyAdds = decodeTokens * 2 * QUERY_HEADS * HEAD_DIM;
  const arithmeticMs = (multiplyAdds / fma.perSecond) * 1e3;
  console.log(`\nArithmetic floor: ${(multiplyAdds / 1e6).toFixed(0)} M f32 multiply-adds per call at this thread's peak ` +
    `(${fmt(fma.perSecond / 1e9, 1)} G/s, ${fma.lanes}-lane FMAs) = ${fmt(arithmeticMs, 3)} ms\n`);
  console.log(markdownTable(['storage', 'read floor ms', 'arithmetic floor ms', 'median ms', '× read floor', '× max(floors)'],
    decode.map((r) => [r.storage, fmt(r.floorMs, 3), fmt(arithmeticMs, 3), fmt(r.medianMs, 3), fmt(r.ratioToFloor),
      fmt(r.medianMs / Math.max(r.floorMs, arithmeticMs))])));
}

void main();
