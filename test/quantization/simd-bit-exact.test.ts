// The vector encoders and the vector Hadamard rotation of the fused append (AVX2, AVX-512)
// against the scalar reference (row_codec_reference.h + hadamard.h, which the portable
// kernels run): every configuration of encode-cases.ts is appended in one child process
// per KVCOMPACT_SIMD level (the native code picks its kernels at load time), and the
// exported bytes of every sequence must be identical. Fresh rows on every run (the seed is
// printed on failure).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { testRng } from '../reference/random';
import { encodeCases } from './encode-cases';

const ROOT = path.resolve(__dirname, '../..');
const CHILD = path.join(__dirname, 'encode-child.ts');
const TSX = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');

function runLevel(level: string, seed: number): { simd: string; results: Record<string, string> } {
  const r = spawnSync(process.execPath, [TSX, CHILD, String(seed)], {
    cwd: ROOT, env: { ...process.env, KVCOMPACT_SIMD: level }, encoding: 'utf8', maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`child with KVCOMPACT_SIMD=${level} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const best = KVCache.devices().cpu.simd;
const levels = best === 'avx512' ? ['avx2', 'avx512'] : best === 'avx2' ? ['avx2'] : [];

describe('vector encoders are bit-exact against the scalar reference', () => {
  it.skipIf(levels.length === 0)(`fused append, every format / group / rotation / input type (${levels.join(', ')} vs portable)`, () => {
    const seed = testRng().nextU32();
    const reference = runLevel('portable', seed);
    expect(reference.simd).toBe('portable');
    const names = encodeCases().map((c) => c.name);
    expect(Object.keys(reference.results)).toEqual(names);
    for (const level of levels) {
      const got = runLevel(level, seed);
      expect(got.simd, 'the child ran the requested level').toBe(level);
      const differ = names.filter((n) => got.results[n] !== reference.results[n]);
      expect(differ, `${level}: configurations whose exported bytes differ from the portable kernels`).toEqual([]);
    }
  }, 120_000);
});
