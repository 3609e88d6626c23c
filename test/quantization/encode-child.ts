// Child process of simd-bit-exact.test.ts: appends the same rows (seeded, with edge cases)
// to caches of every quantized configuration and prints the exported bytes of each as one
// JSON line, under whatever KVCOMPACT_SIMD the parent set (the native code reads it at load).
import { createHash } from 'node:crypto';
import { KVCache } from '../../lib/index';
import { encodeCases, edgeCaseRows } from './encode-cases';

const seed = Number.parseInt(process.argv[2] ?? '1', 10) >>> 0;
const results: Record<string, string> = {};
for (const c of encodeCases()) {
  const cache = new KVCache({
    layers: 1, kvHeads: c.kvHeads, headDim: c.headDim, keys: c.keys, values: c.values, groupSize: c.groupSize,
    rotate: c.rotate ? { keys: true, values: c.rotateValues } : false, blockSize: 16, threads: 1,
  });
  const seq = cache.createSequence();
  const { keys, values } = edgeCaseRows(c, seed);
  if (c.input === 'f16') {
    seq.append(0, f16Bits(keys), f16Bits(values));
  } else {
    seq.append(0, keys, values);
  }
  // The whole export (rows + checksum) in full would be large; its hash identifies the bytes.
  results[c.name] = createHash('sha256').update(seq.export()).digest('hex');
  cache.dispose();
}
process.stdout.write(JSON.stringify({ simd: KVCache.devices().cpu.simd, results }) + '\n');

function f16Bits(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < x.length; i++) {
    f[0] = x[i]!;
    const b = u[0]!;
    const sign = (b >>> 16) & 0x8000;
    const e = ((b >>> 23) & 0xff) - 127 + 15;
    // Test inputs stay in the normal f16 range or are exactly 0 / ±inf; truncation is enough here.
    if ((b & 0x7fffffff) === 0) out[i] = sign;
    else if (e >= 0x1f) out[i] = sign | 0x7c00;
    else if (e <= 0) out[i] = sign;
    else out[i] = sign | (e << 10) | ((b >>> 13) & 0x3ff);
  }
  return out;
}
