// Runs the native tests of Attention Matching compaction (test/native/compaction): every
// kernel against its scalar f64 reference on each instruction set the CPU has, the
// orchestration (exactness, bias semantics, protected rows, chunks, threads, bad input) and
// quality bounds on synthetic LLM-like streams. The executable kvc_compaction_tests is found
// in build/ (any depth) or in $KVC_NATIVE_TEST_DIR; the test is skipped when it was not built.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const NAME = 'kvc_compaction_tests';

function findExecutable(name: string): string | undefined {
  const fromEnv = process.env.KVC_NATIVE_TEST_DIR;
  if (fromEnv) {
    const candidate = path.join(fromEnv, name);
    if (existsSync(candidate)) return candidate;
  }
  // Breadth-first over build/, so build/Release/<name> wins over deeper copies.
  let level = [path.join(ROOT, 'build')];
  for (let depth = 0; depth < 6 && level.length > 0; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      let entries: string[];
      try {
        entries = readdirSync(dir);
      } catch {
        continue;
      }
      for (const entry of entries) {
        const full = path.join(dir, entry);
        let stat;
        try {
          stat = statSync(full);
        } catch {
          continue;
        }
        if (stat.isDirectory()) {
          if (entry !== 'CMakeFiles' && entry !== 'node_modules') next.push(full);
        } else if (entry === name && (stat.mode & 0o111) !== 0) {
          return full;
        }
      }
    }
    level = next;
  }
  return undefined;
}

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
