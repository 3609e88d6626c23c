// Child process of attention-fast-kernels.test.ts: precision 'fast' attention over int8 /
// int4 keys (f16 values, which every kernel computes exactly) for seeded rows, printed as
// hashes of the outputs, under whatever KVCOMPACT_SIMD the parent set.
import { createHash } from 'node:crypto';
import { KVCache, type Storage } from '../../lib/index';

const seed = Number.parseInt(process.argv[2] ?? '1', 10) >>> 0;
let x = seed || 1;
const next = () => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) / 2 ** 31 - 1;
};
const results: Record<string, string> = {};
for (const keys of ['int8', 'int4'] as Storage[]) {
  for (const [headDim, groupSize, blockSize, rows] of [[128, 32, 32, 333], [128, 64, 7, 100], [128, 128, 32, 65], [64, 32, 16, 77], [96, 32, 33, 50]]) {
    const cache = new KVCache({ layers: 1, kvHeads: 2, headDim: headDim!, queryHeads: 8, keys, values: 'f16', groupSize: groupSize!,
      blockSize: blockSize!, threads: 1, precision: 'fast' });
    const seq = cache.createSequence();
    const n = rows! * 2 * headDim!;
    const k = new Float32Array(n).map(() => next() + 0.3);
    const v = new Float32Array(n).map(() => next());
    seq.append(0, k, v);
    const out = seq.attention(0, new Float32Array(2 * 8 * headDim!).map(() => 2 * next()));
    results[`${keys} D${headDim} g${groupSize} b${blockSize} T${rows}`] = createHash('sha256').update(Buffer.from(out.buffer)).digest('hex');
    cache.dispose();
  }
}
process.stdout.write(JSON.stringify({ fastKernels: KVCache.devices().cpu.fastKernels, results }) + '\n');
