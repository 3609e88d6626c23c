// Child process of simd.test.ts: appends seeded rows to low-rank caches on explicit bases
// and prints the rows read back (projected, stored as f32 coefficients, lifted) and an
// attention output, as one JSON line, under whatever KVCOMPACT_SIMD the parent set.
// (No import of the test helpers: they load vitest, which a plain child process cannot.)
import { KVCache } from '../../lib/index';

class Rng {
  constructor(private x: number) {
    this.x = x >>> 0 || 1;
  }
  next(): number {
    this.x ^= this.x << 13;
    this.x ^= this.x >>> 17;
    this.x ^= this.x << 5;
    return (this.x >>> 0) / 2147483648 - 1;
  }
}

function randn(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.next());
}

function orthonormal(rng: Rng, D: number, r: number): Float32Array {
  const g = Float64Array.from(randn(rng, D * r));
  for (let j = 0; j < r; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += g[d * r + i]! * g[d * r + j]!;
        for (let d = 0; d < D; d++) g[d * r + j] = g[d * r + j]! - dot * g[d * r + i]!;
      }
    }
    let n = 0;
    for (let d = 0; d < D; d++) n += g[d * r + j]! ** 2;
    for (let d = 0; d < D; d++) g[d * r + j] = g[d * r + j]! / Math.sqrt(n);
  }
  return Float32Array.from(g);
}

const seed = Number.parseInt(process.argv[2] ?? '1', 10) >>> 0;
const out: Record<string, number[]> = {};
for (const [D, r, T] of [[128, 32, 37], [64, 24, 13], [32, 6, 9], [128, 48, 8]] as const) {
  const rng = new Rng(seed ^ (D * 131 + r));
  using cache = new KVCache({ layers: 1, kvHeads: 1, queryHeads: 2, headDim: D, keys: 'f32', values: 'f32', groupSize: 2, threads: 1, lowRank: { keys: r, values: r, calibrationRows: 0 } });
  const seq = cache.createSequence();
  seq.setBases(0, 0, { keys: orthonormal(rng, D, r), values: orthonormal(rng, D, r) });
  seq.append(0, randn(rng, T * D), randn(rng, T * D));
  const rows = seq.read(0, 0);
  out[`${D}/${r} keys`] = Array.from(rows.keys);
  out[`${D}/${r} values`] = Array.from(rows.values);
  out[`${D}/${r} attention`] = Array.from(seq.attention(0, randn(rng, 2 * D)));
}
console.log(JSON.stringify({ simd: KVCache.devices().cpu.simd, out }));
