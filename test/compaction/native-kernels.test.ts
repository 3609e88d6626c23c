// Runs the native tests of Attention Matching compaction (test/native/compaction): every
// kernel against its scalar f64 reference on each instruction set the CPU has, the
// orchestration (exactness, bias semantics, protected rows, chunks, threads, bad input) and
// quality bounds on synthetic LLM-like streams. The executable kvc_compaction_tests is found
// in build/ (any depth) or in $KVC_NATIVE_TEST_DIR; the test is skipped when it was not built.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

import { findExecutable } from '../support/native-executables';

const NAME = 'kvc_compaction_tests';

function run(executable: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const result = spawnSync(executable, args, {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 300_000,
  });
  return { status: result.status, signal: result.signal, output: `${result.stdout ?? ''}${result.stderr ?? ''}` };
}

const executable = findExecutable(NAME);

describe('compaction kernels and orchestration (native)', () => {
  it.skipIf(!executable)('all kernels match the reference; compaction meets its quality bounds', () => {
    const { status, signal, output } = run(executable!, []);
    expect(signal, output).toBeNull();
    expect(status, output).toBe(0);
    expect(output).toMatch(/kvc_compaction_tests: \d+ checks, 0 failures/);
  }, 300_000);

  it.skipIf(!executable)('the orchestration also passes on the portable kernels', () => {
    const { status, signal, output } = run(executable!, ['--quick'], { KVCOMPACT_SIMD: 'portable' });
    expect(signal, output).toBeNull();
    expect(status, output).toBe(0);
    expect(output).toContain('core: using kernels [portable]');
  }, 300_000);
});
