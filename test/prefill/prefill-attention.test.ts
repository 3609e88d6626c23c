// The prefill attention kernel (prefill_kernel.inl: Tq x GQA group >= 32 query vectors per
// call) against the float64 reference on the rows as stored, every storage format, causal
// masks crossing block edges, beta from a compaction, the attention mass; with the widest
// kernels in process and with KVCOMPACT_SIMD=avx2 and portable in child processes (the same
// cases, fresh random rows). Tolerances: attention-tolerance.ts (the same as decode).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { LSE_TOL, outputTol } from '../foundation/attention-tolerance';
import { randn, testRng } from '../reference/random';
import { type CaseResult, PREFILL_CASES, caseName, runPrefillCase } from './prefill-cases';

const ROOT = path.resolve(__dirname, '../..');
const CHILD = path.join(__dirname, 'prefill-child.ts');
const TSX = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');

function check(r: CaseResult, label: string): void {
  expect(r.outRel, `${label}: output rel error`).toBeLessThanOrEqual(outputTol(r.T).rel);
  expect(r.lseAbs, `${label}: lse abs error`).toBeLessThanOrEqual(LSE_TOL.abs);
  expect(r.massAbs, `${label}: mass abs error`).toBeLessThanOrEqual(r.massTol);
  expect(r.threadsEqual, `${label}: threads 1 and 2 bit-identical`).toBe(true);
}

describe('prefill attention vs float64 reference', () => {
  for (const c of PREFILL_CASES) {
    it(caseName(c), async () => {
      const rng = testRng();
      check(await runPrefillCase(c, (n, scale) => randn(rng, n, scale)), caseName(c));
    });
  }
});

describe('prefill attention, narrower kernels', () => {
  const simd = KVCache.devices().cpu.simd;
  for (const level of ['avx2', 'portable']) {
    it.skipIf(level === 'avx2' && simd === 'portable')(`KVCOMPACT_SIMD=${level}`, () => {
      const seed = testRng().nextU32();
      const r = spawnSync(process.execPath, [TSX, CHILD, String(seed)], {
        cwd: ROOT, env: { ...process.env, KVCOMPACT_SIMD: level }, encoding: 'utf8', maxBuffer: 16 << 20,
      });
      if (r.status !== 0) throw new Error(`child with KVCOMPACT_SIMD=${level} failed (${r.status}): ${r.stderr}`);
      const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { simd: string; results: CaseResult[] };
      expect(got.simd).toBe(level);
      expect(got.results.length).toBe(PREFILL_CASES.length);
      for (const res of got.results) check(res, `${level}: ${res.name}`);
    }, 120_000);
  }
});
