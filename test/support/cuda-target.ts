// Where device 'cuda' runs in the tests: on the real GPU when the production addon reports
// one (KVCache.devices().cuda.available), otherwise on the CPU through the SIMT emulator of
// the test addon (KVCOMPACT_NATIVE=test, KVCOMPACT_CUDA_EMULATION=1). Never skipped: with
// neither, cudaTarget() throws and the file fails, saying what to build.
//
// Call cudaTarget() at the top of a test file, before anything uses the addon (the addon a
// process uses is fixed at its first use). KVCOMPACT_CUDA_TARGET=device|emulator forces one
// (npm run gpu-check sets 'device', so a missing GPU fails instead of falling back).
//
// Tolerances. The emulator runs the kernels' own source on the CPU with exact expf and no
// FMA contraction (cuda/CMakeLists.txt: -ffp-contract=off), so stored rows and exports are
// bit-identical to device 'cpu' and attention differs only by summation order (2e-6). A real
// GPU differs in three ways, each admitted by the 'device' tolerances below:
//   - __expf is approximate (ex2.approx: 2 + floor(|1.16 x|) ulp, so up to ~3e-6 relative
//     for the logit range of these tests); the error of an attention output, a weighted mean
//     of values that nearly cancel, is that weight error amplified by ‖v‖/‖o‖ (≤ ~30 here);
//   - nvcc contracts a*b+c into fma (one rounding instead of two), so a dequantized value
//     or a rotated coordinate can differ by an ulp, and a value on a rounding boundary
//     can quantize one step away;
//   - attention mass is accumulated with atomicAdd, whose order varies from run to run.
import { expect } from 'vitest';

import { loadNative, native } from '../../lib/native/binding';
import type { Storage } from '../../lib/index';

export type CudaTargetKind = 'device' | 'emulator';

export interface CudaTarget {
  /** Where device 'cuda' runs. */
  kind: CudaTargetKind;
  /**
   * Which comparison rules apply: 'exact' on the emulator, 'gpu' on a device. The emulator
   * can be held to the GPU rules with KVCOMPACT_CUDA_RULES=gpu, which exercises the tests'
   * GPU branches on a machine without one (they must pass: the emulator is exact).
   */
  rules: 'exact' | 'gpu';
  /** The device name as devices() reports it. */
  name: string;
  /** Relative (normwise) error allowed between device 'cuda' and device 'cpu' attention output. */
  attentionRel: number;
  /** The same for log-sum-exp per query head. */
  lseRel: number;
  /** The same for accumulated attention mass (atomics on a GPU). */
  scoresRel: number;
}

const EXACT = { rules: 'exact', attentionRel: 2e-6, lseRel: 2e-6, scoresRel: 2e-6 } as const;
const GPU = { rules: 'gpu', attentionRel: 1e-4, lseRel: 1e-5, scoresRel: 1e-4 } as const;

let decided: CudaTarget | undefined;

/** Decides once per process (per test file) and logs the choice. */
export function cudaTarget(want?: CudaTargetKind): CudaTarget {
  const forced = want ?? (process.env['KVCOMPACT_CUDA_TARGET'] as CudaTargetKind | undefined);
  if (forced !== undefined && forced !== 'device' && forced !== 'emulator') {
    throw new Error(`KVCOMPACT_CUDA_TARGET must be 'device' or 'emulator', got '${String(forced)}'`);
  }
  if (decided) {
    if (forced && decided.kind !== forced) {
      throw new Error(`cudaTarget('${forced}') after this process chose '${decided.kind}'; use one per test file`);
    }
    return decided;
  }
  if (forced !== 'emulator') {
    const cuda = loadNative('production').devices().cuda;
    if (cuda.available && !cuda.emulated) {
      decided = { kind: 'device', name: cuda.name ?? 'cuda', ...GPU };
    } else if (forced === 'device') {
      throw new Error(`KVCOMPACT_CUDA_TARGET=device but the production addon reports: ${cuda.reason ?? 'no device'}`);
    }
  }
  if (!decided) {
    process.env['KVCOMPACT_NATIVE'] = 'test';
    process.env['KVCOMPACT_CUDA_EMULATION'] = '1';
    const cuda = native().devices().cuda;
    if (!cuda.emulated) {
      throw new Error(
        'device cuda has neither a GPU nor the emulator: ' +
          (cuda.emulationCompiled
            ? 'the test addon did not switch to emulation'
            : 'this process already loaded the production addon; call cudaTarget() before the addon is first used'),
      );
    }
    decided = { kind: 'emulator', name: cuda.name ?? 'emulated', ...(process.env['KVCOMPACT_CUDA_RULES'] === 'gpu' ? GPU : EXACT) };
  }
  console.log(`[cuda target] ${decided.kind}: ${decided.name} (${decided.rules} comparison rules)`);
  return decided;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function bitsOf(x: number): number {
  f32[0] = x;
  return u32[0]!;
}

// One quantization step of a group as a fraction of its largest |x| (int4 is asymmetric:
// range / 15 ≤ 2·max / 15), and a few ulps for the float formats.
const STEP: Record<Storage, number> = { f32: 4 * 2 ** -23, f16: 2 ** -10, bf16: 2 ** -7, int8: 1 / 127, int4: 2 / 15 };

/**
 * Dequantized rows read from device 'cuda' against the same rows from device 'cpu'. Exact
 * rules: bit for bit. GPU rules: every element within one step of its group's format (see the header)
 * plus 4 f32 ulps of the group's largest value, and at most 1% of the elements off by more
 * than those 4 ulps (a whole-row shift would fail).
 */
export function expectRowsMatch(
  target: CudaTarget,
  actual: Float32Array,
  expected: Float32Array,
  storage: Storage,
  groupSize: number,
  label: string,
): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  const differing: number[] = [];
  for (let i = 0; i < actual.length; i++) if (bitsOf(actual[i]!) !== bitsOf(expected[i]!)) differing.push(i);
  if (target.rules === 'exact') {
    if (differing.length > 0) {
      const i = differing[0]!;
      expect.fail(`${label}: ${differing.length} of ${actual.length} elements differ; first at ${i}: ` +
        `actual ${actual[i]}, expected ${expected[i]}`);
    }
    return;
  }
  let beyondUlps = 0;
  for (const i of differing) {
    const g0 = Math.floor(i / groupSize) * groupSize;
    let groupMax = 0;
    for (let j = g0; j < Math.min(g0 + groupSize, expected.length); j++) groupMax = Math.max(groupMax, Math.abs(expected[j]!));
    const ulps = 4 * 2 ** -23 * groupMax;
    const diff = Math.abs(actual[i]! - expected[i]!);
    if (!(diff <= STEP[storage] * groupMax * 1.01 + ulps)) {
      expect.fail(`${label}: element ${i} differs by ${diff} (actual ${actual[i]}, expected ${expected[i]}), ` +
        `more than one ${storage} step of its group (max |x| ${groupMax})`);
    }
    if (diff > ulps) beyondUlps++;
  }
  expect(beyondUlps, `${label}: elements off by more than 4 ulps`).toBeLessThanOrEqual(Math.ceil(0.01 * actual.length));
}
