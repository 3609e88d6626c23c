// Writes the seed corpus of the import fuzzer (test/fuzz/corpus/): real exports made with the
// public API, covering every storage format for keys and values, rotation, GQA, sequences
// that were evicted (each policy family), compacted (both methods), forked and truncated,
// empty streams and uneven stream lengths; plus a few seeds for the option decoders.
// Each file starts with the harness's mode byte (fuzz_import.cpp): 1 | (blockSize - 1) << 2
// for exports (import with the checksum kept valid), 2 and 3 for the decoders.
// Usage: npx tsx test/fuzz/make-corpus.ts [outDir]   (deterministic: fixed seeds)
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { Compactor, EvictionPolicy, KVCache, type Sequence } from '../../lib/index';
import { Mulberry32 } from '../../examples/shared/mulberry32';

type Storage = 'f32' | 'f16' | 'bf16' | 'int8' | 'int4';
const STORAGES: Storage[] = ['f32', 'f16', 'bf16', 'int8', 'int4'];

const out = path.resolve(process.argv[2] ?? path.join(__dirname, 'corpus'));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
let written = 0;

function save(name: string, mode: number, bytes: Uint8Array): void {
  const file = new Uint8Array(bytes.length + 1);
  file[0] = mode;
  file.set(bytes, 1);
  writeFileSync(path.join(out, name), file);
  written++;
}
const importMode = (blockSize: number) => 1 | ((blockSize - 1) << 2);

interface Shape { layers: number; kvHeads: number; headDim: number; queryHeads: number; keys: Storage; values: Storage; groupSize: number; rotate: boolean }

function fill(cache: KVCache, seq: Sequence, s: Shape, rng: Mulberry32, tokens: number): void {
  for (let l = 0; l < s.layers; l++) {
    const n = tokens - l; // uneven layers
    seq.append(l, rows(rng, n * s.kvHeads * s.headDim), rows(rng, n * s.kvHeads * s.headDim));
  }
  void cache;
}

function attend(seq: Sequence, s: Shape, rng: Mulberry32): void {
  for (let l = 0; l < s.layers; l++) {
    seq.attention(l, rows(rng, 2 * s.queryHeads * s.headDim), { recordQueries: true, accumulateScores: true });
  }
}

// Uniform rows in [-2, 2) from a fixed seed (test/reference/random.ts needs vitest).
const rng = new Mulberry32(0x5eed);
function rows(r: Mulberry32, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r.u32() / 2 ** 32) * 4 - 2;
  return a;
}
// Every key format x every value format, small shapes (fast to mutate).
for (const keys of STORAGES) {
  for (const values of STORAGES) {
    const s: Shape = { layers: 2, kvHeads: 2, headDim: 16, queryHeads: 4, keys, values, groupSize: 8, rotate: false };
    const cache = new KVCache({ ...s, blockSize: 4, threads: 1 });
    const seq = cache.createSequence();
    fill(cache, seq, s, rng, 9);
    save(`format-${keys}-${values}`, importMode(4), seq.export());
    cache.dispose();
  }
}

// Rotation (keys, keys + values), larger head, GQA; then the operations on top.
const shapes: Array<[string, Shape]> = [
  ['rot-keys-int8', { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, keys: 'int8', values: 'f16', groupSize: 16, rotate: true }],
  ['rot-both-int4', { layers: 1, kvHeads: 2, headDim: 32, queryHeads: 2, keys: 'int4', values: 'int4', groupSize: 32, rotate: true }],
  ['plain-f16', { layers: 3, kvHeads: 1, headDim: 8, queryHeads: 2, keys: 'f16', values: 'f16', groupSize: 8, rotate: false }],
];
const compactor = new Compactor({ method: 'highest-attention', ratio: 0.5, protect: { sinks: 1, recent: 2 }, threads: 1 });
const omp = new Compactor({ method: 'omp', ratio: 0.4, protect: { sinks: 1, recent: 1 }, threads: 1 });
for (const [name, s] of shapes) {
  const rotate = name === 'rot-both-int4' ? { keys: true, values: true } : s.rotate;
  const cache = new KVCache({ ...s, rotate, blockSize: 8, threads: 1 });
  const seq = cache.createSequence();
  fill(cache, seq, s, rng, 24);
  attend(seq, s, rng);
  save(`${name}`, importMode(8), seq.export());

  const evicted = [
    ['h2o', EvictionPolicy.h2o({ recent: 2 }), { ratio: 0.5 }],
    ['snapkv-adaptive', EvictionPolicy.snapKV({ window: 2 }), { ratio: 0.6, perHead: 'adaptive' as const }],
    ['window', EvictionPolicy.slidingWindow({ window: 6, sinks: 1 }), undefined],
    ['keynorm-pyramid', EvictionPolicy.keyNorm(), { ratio: 0.5, schedule: 'pyramid' as const }],
  ] as const;
  for (const [tag, policy, budget] of evicted) {
    const f = seq.fork();
    f.evict(policy, budget);
    save(`${name}-evicted-${tag}`, importMode(8), f.export());
    f.free();
  }
  for (const [tag, c] of [['highest-attention', compactor], ['omp', omp]] as const) {
    const f = seq.fork();
    c.compactSync(f);
    save(`${name}-compacted-${tag}`, importMode(8), f.export());
    f.free();
  }
  const forked = seq.fork();
  forked.append(0, rows(rng, s.kvHeads * s.headDim), rows(rng, s.kvHeads * s.headDim));
  save(`${name}-forked-appended`, importMode(3), forked.export());
  forked.truncate(5);
  save(`${name}-forked-truncated`, importMode(1), forked.export());
  forked.truncate(0);
  save(`${name}-empty`, importMode(16), forked.export());
  // The same export imported as is (mode 0: the checksum checks stay in the way).
  save(`${name}-raw`, 0, seq.export());
  cache.dispose();
}

// Option decoders: a valid config (mode 2) and valid policy + budget records (mode 3).
const config = new Uint8Array(32);
new DataView(config.buffer).setUint16(0, 2, true); // layers
new DataView(config.buffer).setUint16(2, 2, true); // kvHeads
new DataView(config.buffer).setUint16(4, 16, true); // headDim
new DataView(config.buffer).setUint16(6, 4, true); // queryHeads
new DataView(config.buffer).setUint16(8, 4, true); // blockSize
config[10] = 3; config[11] = 4; // int8 keys, int4 values
new DataView(config.buffer).setUint16(12, 8, true); // groupSize
config[14] = 1; // rotate keys
new DataView(config.buffer).setUint32(15, 1 << 20, true); // maxBytes
save('config-valid', 2, config);
for (const [tag, source, kind, flags] of [['h2o-ratio', 1, 1, 0], ['snapkv-adaptive', 2, 1, 1], ['given-keep', 6, 0, 0], ['random-pyramid', 5, 1, 2]] as const) {
  const rec = new Uint8Array(64 + 120);
  const dv = new DataView(rec.buffer);
  rec[0] = source; rec[1] = 1; rec[2] = 2; rec[3] = 2; rec[4] = 1; dv.setUint32(5, 7, true);
  rec[9] = kind; dv.setUint16(10, 5, true); dv.setFloat64(12, 0.5, true);
  rec[20] = 0; rec[21] = flags; dv.setFloat64(22, 0.2, true); dv.setFloat64(30, 0.5, true);
  for (let i = 38; i < rec.length; i++) rec[i] = (i * 37) & 0xff;
  save(`policy-${tag}`, 3, rec);
}
console.log(`make-corpus: ${written} seeds in ${out}`);
