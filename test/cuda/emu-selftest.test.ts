// Runs the native test executables of the CUDA backend's emulated build: the SIMT
// emulator's self-test (cuda/emu/tests) and the kernel tests against the scalar reference
// (cuda/tests). They are found in build/ (any depth) or in $KVC_NATIVE_TEST_DIR; a build that
// has not produced them (node-gyp, or no CUDA toolkit headers) fails here, saying so, rather
// than skipping: the emulator is what holds the CUDA kernels to their references.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

import { findExecutable } from '../support/native-executables';


function run(executable: string, env: NodeJS.ProcessEnv = {}) {
  const result = spawnSync(executable, [], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 300_000,
  });
  return { status: result.status, signal: result.signal, output: `${result.stdout ?? ''}${result.stderr ?? ''}` };
}

const selftest = findExecutable('kvc_emu_selftest');
const kernelTests = findExecutable('kvc_cuda_kernel_tests');
const attentionTests = findExecutable('kvc_cuda_attention_tests');

describe('CUDA backend, emulated build', () => {
  it('SIMT emulator self-test passes (fiber and thread modes)', () => {
    expect(selftest, 'kvc_emu_selftest is built by `npm run build:native` (needs the CUDA toolkit headers)').toBeDefined();
    const { status, signal, output } = run(selftest!);
    expect(signal, output).toBeNull();
    expect(status, output).toBe(0);
    expect(output).toContain('emu_selftest: all passed');
  });

  it('CUDA kernels match the scalar reference', () => {
    expect(kernelTests, 'kvc_cuda_kernel_tests is built by `npm run build:native` (needs the CUDA toolkit headers)').toBeDefined();
    const { status, signal, output } = run(kernelTests!);
    expect(signal, output).toBeNull();
    expect(status, output).toBe(0);
    expect(output).toMatch(/kvc_cuda_kernel_tests: \d+ checks, 0 failures/);
  }, 300_000);

  it.skipIf(!attentionTests)('split-K attention matches the scalar reference (every format pair)', () => {
    const { status, signal, output } = run(attentionTests!);
    expect(signal, output).toBeNull();
    expect(status, output).toBe(0);
    expect(output).toMatch(/kvc_cuda_attention_tests: \d+ checks, 0 failures/);
  }, 300_000);
});
