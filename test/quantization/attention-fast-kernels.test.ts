// precision 'fast': the AVX-512 VNNI key scorer and the portable integer scorer compute the
// same logits (exact integer dot products, the groups combined in the same float order), so
// with exact values the outputs are bit-identical. One child process per KVCOMPACT_SIMD level
// ('novnni' keeps AVX-512 but not its integer kernels); fresh rows every run.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { testRng } from '../reference/random';

const ROOT = path.resolve(__dirname, '../..');
const CHILD = path.join(__dirname, 'fast-child.ts');
const TSX = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');

function runLevel(level: string, seed: number): { fastKernels: string; results: Record<string, string> } {
  const r = spawnSync(process.execPath, [TSX, CHILD, String(seed)], {
    cwd: ROOT, env: { ...process.env, KVCOMPACT_SIMD: level }, encoding: 'utf8', maxBuffer: 16 << 20,
  });
  if (r.status !== 0) throw new Error(`child with KVCOMPACT_SIMD=${level} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

describe("precision 'fast': integer kernels agree", () => {
  it.skipIf(KVCache.devices().cpu.fastKernels !== 'avx512-vnni')('AVX-512 VNNI key scorer vs the portable integer scorer', () => {
    const seed = testRng().nextU32();
    const vnni = runLevel('avx512', seed);
    const portable = runLevel('novnni', seed);
    expect(vnni.fastKernels).toBe('avx512-vnni');
    expect(portable.fastKernels).toBe('portable');
    expect(Object.keys(vnni.results).length).toBe(10);
    const differ = Object.keys(vnni.results).filter((k) => vnni.results[k] !== portable.results[k]);
    expect(differ, 'configurations whose outputs differ').toEqual([]);
  });
});
