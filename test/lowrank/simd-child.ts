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
// Pre-RoPE low-rank keys (the fused lift, rotate and dot of rope_logits.inl) and unequal ranks
// (row dots of coefficients against projected queries): tiles of 16 rows with a partial last
// tile, both pair styles, partial rotary dims, positions past 256 (angle addition).
for (const [D, r, rv, T, style, dims] of [[128, 32, 32, 70, 'half', 128], [64, 24, 64, 37, 'interleaved', 64], [32, 8, 16, 23, 'interleaved', 16]] as const) {
  const rng = new Rng(seed ^ (D * 977 + r));
  using cache = new KVCache({ layers: 1, kvHeads: 1, queryHeads: 4, headDim: D, keys: 'f32', values: 'f32', groupSize: 2, threads: 1,
    rope: { theta: 10000, dims, style }, lowRank: { keys: r, values: rv, calibrationRows: 0 } });
  const seq = cache.createSequence();
  seq.setBases(0, 0, { keys: orthonormal(rng, D, r), values: rv < D ? orthonormal(rng, D, rv) : new Float32Array(0) });
  const positions = Int32Array.from({ length: T }, (_, i) => 200 + 37 * i);
  seq.append(0, randn(rng, T * D), randn(rng, T * D), { positions });
  out[`rope ${D}/${r}/${rv} ${style} attention`] = Array.from(seq.attention(0, randn(rng, 2 * 4 * D)));
}
{
  const rng = new Rng(seed ^ 4242);
  using cache = new KVCache({ layers: 1, kvHeads: 1, queryHeads: 4, headDim: 64, keys: 'f32', values: 'f32', groupSize: 2, threads: 1,
    lowRank: { keys: 24, values: 64, calibrationRows: 0 } });
  const seq = cache.createSequence();
  seq.setBases(0, 0, { keys: orthonormal(rng, 64, 24), values: new Float32Array(0) });
  seq.append(0, randn(rng, 45 * 64), randn(rng, 45 * 64));
  out['unequal ranks 64/24/64 attention'] = Array.from(seq.attention(0, randn(rng, 3 * 4 * 64)));
}
console.log(JSON.stringify({ simd: KVCache.devices().cpu.simd, out }));
