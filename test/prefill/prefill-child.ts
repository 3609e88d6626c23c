// Child process of prefill-attention.test.ts: runs every prefill case under the
// KVCOMPACT_SIMD level the parent set, with rows drawn from the given seed, and prints the
// errors as JSON.
import { KVCache } from '../../lib/index';
import { Mulberry32 } from '../../examples/shared/mulberry32';
import { PREFILL_CASES, runPrefillCase } from './prefill-cases';

async function main(): Promise<void> {
  const seed = Number.parseInt(process.argv[2] ?? '1', 10) >>> 0;
  const bits = new Mulberry32(seed);
  const normal = () => {
    let u = 0;
    while (u === 0) u = bits.u32() / 2 ** 32;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos((2 * Math.PI * bits.u32()) / 2 ** 32);
  };
  const randn = (n: number, scale = 1) => Float32Array.from({ length: n }, () => normal() * scale);
  const results = [];
  for (const c of PREFILL_CASES) results.push(await runPrefillCase(c, randn));
  process.stdout.write(JSON.stringify({ simd: KVCache.devices().cpu.simd, results }) + '\n');
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
