// Writes the .kvc test corpus of the current export format versions (test/kvc-corpus/v<N>/,
// N = the version each file is written with: 2 without rope, 3 with rope, 4 with tiers, 5 for
// low-rank caches with unequal key and value ranks): small sequences of
// every storage format, with rotation, gapped positions, a compacted one (non-zero beta), an
// empty one, low-rank ones (one stream still calibrating) and one with RoPE applied by the
// cache, from seeded inputs, plus manifest.json with each file's
// cache options and a digest of what it must decode to. Files of earlier versions are never
// rewritten: they are what "old versions stay importable" is tested against.
//   npx tsx scripts/make-kvc-corpus.ts
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Compactor, KVCache, type KVCacheOptions, type Sequence } from '../lib/index';
import { EXPORT_VERSION, LOW_RANK_RANKS_EXPORT_VERSION, ROPE_EXPORT_VERSION, TIERED_EXPORT_VERSION } from '../lib/prefix-store/export-layout';

interface Case {
  name: string;
  options: KVCacheOptions;
  tokens: number[]; // per layer
  gapped?: boolean;
  compact?: number;
}

const base = { layers: 2, kvHeads: 2, headDim: 16, queryHeads: 4, blockSize: 8, threads: 1 };
const cases: Case[] = [
  { name: 'f32', options: { ...base, keys: 'f32', values: 'f32' }, tokens: [5, 5] },
  { name: 'f16-bf16-gapped', options: { ...base, keys: 'f16', values: 'bf16' }, tokens: [7, 3], gapped: true },
  { name: 'int8-int4-rotated', options: { ...base, keys: 'int8', values: 'int4', groupSize: 8, rotate: { keys: true, values: true }, rotationSeed: 7 }, tokens: [12, 12] },
  { name: 'int4-int8', options: { ...base, keys: 'int4', values: 'int8', groupSize: 16 }, tokens: [9, 9] },
  { name: 'int8-compacted', options: { ...base, keys: 'int8', values: 'int8', groupSize: 8 }, tokens: [24, 24], compact: 0.5 },
  { name: 'empty', options: { ...base, keys: 'f16', values: 'f16' }, tokens: [0, 0] },
  { name: 'lowrank-f16', options: { ...base, keys: 'f16', values: 'f16', lowRank: { keys: 8, values: 8, calibrationRows: 8 } }, tokens: [12, 5] },
  { name: 'lowrank-int8', options: { ...base, keys: 'int8', values: 'int8', groupSize: 8, lowRank: { keys: 8, values: 8, calibrationRows: 4 } }, tokens: [10, 10] },
  { name: 'rope-f16', options: { ...base, keys: 'f16', values: 'f16', rope: { theta: 10000 } }, tokens: [6, 6], gapped: true },
  { name: 'tiers-f16-int8-int4', options: { ...base, groupSize: 8, rotate: true, tiers: [{ rows: 8, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int4' }] }, tokens: [37, 20], gapped: true },
  { name: 'lowrank-ranks-int8-int4', options: { ...base, keys: 'int8', values: 'int4', groupSize: 4, lowRank: { keys: 4, values: 8, calibrationRows: 6 } }, tokens: [11, 4] },
  { name: 'lowrank-full-values-rope', options: { ...base, keys: 'f16', values: 'int4', groupSize: 8, rope: { theta: 10000 }, lowRank: { keys: 8, values: 16, calibrationRows: 5 } }, tokens: [9, 9], gapped: true },
  { name: 'tiers-three', options: { ...base, groupSize: 8, tiers: [{ rows: 4, keys: 'f32', values: 'f32' }, { rows: 16, keys: 'bf16', values: 'f16' }, { keys: 'int4', values: 'int4' }] }, tokens: [50, 3] },
];

/** Deterministic inputs: a linear congruential generator per case. */
function values(seed: number, n: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 4 - 2);
}

/** SHA-256 over every stream's dequantized keys, values, beta and positions, in stream order. */
export function decodedDigest(seq: Sequence, layers: number, kvHeads: number): string {
  const h = createHash('sha256');
  for (let l = 0; l < layers; l++) {
    for (let k = 0; k < kvHeads; k++) {
      const r = seq.read(l, k);
      for (const a of [r.keys, r.values, r.beta, r.positions]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    }
  }
  return h.digest('hex');
}

// Arguments: the versions to write (default: every current one), e.g. `4` when version 4 was
// introduced, so that the files of the other versions are not rewritten.
async function main(): Promise<void> {
  const only = process.argv.slice(2).map(Number);
  const manifests = new Map<number, Record<string, unknown>[]>([[EXPORT_VERSION, []], [ROPE_EXPORT_VERSION, []], [TIERED_EXPORT_VERSION, []], [LOW_RANK_RANKS_EXPORT_VERSION, []]]);
  const dirOf = (v: number) => path.join(__dirname, '..', 'test', 'kvc-corpus', `v${v}`);
  for (const [i, c] of cases.entries()) {
    const cache = new KVCache(c.options);
    const seq = cache.createSequence();
    const row = c.options.kvHeads * c.options.headDim;
    c.tokens.forEach((t, l) => {
      if (t === 0) return;
      const positions = c.gapped ? Int32Array.from({ length: t }, (_, j) => 3 * j + l) : undefined;
      seq.append(l, values(1000 * i + 2 * l, t * row), values(1000 * i + 2 * l + 1, t * row), positions ? { positions } : undefined);
    });
    if (c.compact) await new Compactor({ ratio: c.compact, protect: { sinks: 2, recent: 4 }, queries: 'keys', threads: 1 }).compact(seq);
    const bytes = seq.export();
    const version = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
    const manifest = manifests.get(version);
    if (!manifest) throw new Error(`${c.name}: exported as version ${version}, not a current version`);
    if (only.length > 0 && !only.includes(version)) {
      cache.dispose();
      continue;
    }
    const dir = dirOf(version);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, `${c.name}.kvc`), bytes);
    const lengths = Array.from({ length: c.options.layers }, (_, l) => Array.from(seq.lengths(l)));
    const nextPositions = Array.from({ length: c.options.layers }, (_, l) => seq.nextPosition(l));
    manifest.push({ file: `${c.name}.kvc`, options: c.options, lengths, nextPositions, decoded: decodedDigest(seq, c.options.layers, c.options.kvHeads) });
    cache.dispose();
  }
  for (const [version, files] of manifests) {
    if (only.length > 0 && !only.includes(version)) continue;
    writeFileSync(path.join(dirOf(version), 'manifest.json'), JSON.stringify({ version, files }, null, 2) + '\n');
    console.log(`wrote ${files.length} files to ${dirOf(version)}`);
  }
}

if (require.main === module) void main();
