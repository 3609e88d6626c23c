// The vector projection and lift of low-rank storage (AVX2, AVX-512: cpp/cpu/lowrank/) against
// the portable path: one child process per KVCOMPACT_SIMD level appends the same seeded rows
// on the same bases; rows read back and attention outputs agree to f32 rounding (the paths
// sum in the same order of d; only FMA contraction differs), for ranks that exercise whole
// vector pairs, single vectors and scalar tail columns, and row counts off the register tile.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { testRng } from '../reference/random';
import { maxAbs } from './lowrank-reference';

const ROOT = path.resolve(__dirname, '../..');
const CHILD = path.join(__dirname, 'simd-child.ts');
const TSX = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');

function runLevel(level: string, seed: number): { simd: string; out: Record<string, number[]> } {
  const r = spawnSync(process.execPath, [TSX, CHILD, String(seed)], {
    cwd: ROOT, env: { ...process.env, KVCOMPACT_SIMD: level }, encoding: 'utf8', maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`child with KVCOMPACT_SIMD=${level} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const best = KVCache.devices().cpu.simd;
const levels = best === 'avx512' ? ['avx2', 'avx512'] : best === 'avx2' ? ['avx2'] : [];

describe('low-rank projection and lift: vector paths against the portable one', () => {
  it.skipIf(levels.length === 0)(`${levels.join(', ')} vs portable`, () => {
    const seed = testRng().nextU32();
    const reference = runLevel('portable', seed);
    expect(reference.simd).toBe('portable');
    for (const level of levels) {
      const got = runLevel(level, seed);
      expect(got.simd).toBe(level);
      for (const [name, want] of Object.entries(reference.out)) {
        const scale = Math.max(1, ...want.map(Math.abs));
        expect(maxAbs(got.out[name]!, want) / scale, `${level} ${name}`).toBeLessThan(2e-6);
      }
    }
  }, 120_000);
});
