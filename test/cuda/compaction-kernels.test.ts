// Runs the native tests of the CUDA backend's compaction kernels (cuda/tests/
// compaction_kernel_tests.cpp) through the emulated build: each kernel against its scalar
// reference, and Backend::compactStreams / applyCompactionFit of the emulated CUDA backend
// against the CPU's compaction, with the proof that no row is copied to the host. Found in
// build/ (any depth) or $KVC_NATIVE_TEST_DIR; skipped when that build has not produced it.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

import { findExecutable } from '../support/native-executables';

const executable = findExecutable('kvc_cuda_compaction_tests');

describe('CUDA compaction kernels, emulated build', () => {
  it.skipIf(!executable)('match the scalar references and the CPU compaction; rows stay on the device', () => {
    const result = spawnSync(executable!, [], { encoding: 'utf8', timeout: 300_000 });
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
    expect(result.signal, output).toBeNull();
    expect(result.status, output).toBe(0);
    expect(output).toMatch(/kvc_cuda_compaction_tests: \d+ checks, 0 failures/);
    expect(output).toMatch(/parity: [1-9]\d* streams/);
  }, 300_000);

  it.skipIf(!executable)('kernels also pass with every CUDA thread on its own OS thread (KVC_EMU_MODE=threads)', () => {
    const result = spawnSync(executable!, ['--kernels'], {
      encoding: 'utf8',
      env: { ...process.env, KVC_EMU_MODE: 'threads' },
      timeout: 300_000,
    });
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
    expect(result.signal, output).toBeNull();
    expect(result.status, output).toBe(0);
    expect(output).toMatch(/kvc_cuda_compaction_tests: [1-9]\d* checks, 0 failures/);
  }, 300_000);
});
