// Runs the native fault-injection test of the cache's transactions
// (test/native/transactions): every mutating operation (append, copy-on-write after fork,
// truncate, keepRows, eviction, compaction, import) is run once per backend call it makes,
// with that call failing, on the CPU backend and on the emulated CUDA backend; the cache
// must come back byte-identical each time. The executable kvc_transactions_tests is found in
// build/ (any depth) or in $KVC_NATIVE_TEST_DIR; the test is skipped when it was not built.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

import { findExecutable } from '../support/native-executables';

const NAME = 'kvc_transactions_tests';
const executable = findExecutable(NAME);

describe('transactions under backend faults (native)', () => {
  it.skipIf(!executable)('every operation completes or leaves the cache byte-identical, for every failing call', () => {
    const result = spawnSync(executable!, [], { encoding: 'utf8', timeout: 600_000 });
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
    expect(result.signal, output).toBeNull();
    expect(result.status, output).toBe(0);
    expect(output).toMatch(/kvc_transactions_tests: \d+ checks, 0 failures/);
    // Every scenario made backend calls, so every one was failed at least once.
    const points = /fault injection: (\d+) operations, (\d+) failure points/.exec(output);
    expect(points, output).not.toBeNull();
    expect(Number(points![1])).toBeGreaterThanOrEqual(26);
    expect(Number(points![2])).toBeGreaterThan(2 * Number(points![1]));
  }, 600_000);
});
