// Runs the native test executables of the CUDA backend's emulated build: the SIMT
// emulator's self-test (cuda/emu/tests) and the kernel tests against the scalar reference
// (cuda/tests). They are found in build/ (any depth) or in $KVC_NATIVE_TEST_DIR and skipped
// when that build has not produced them (no CUDA toolkit headers, or node-gyp build).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');

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

describe('CUDA backend, emulated build', () => {
  it.skipIf(!selftest)('SIMT emulator self-test passes (fiber and thread modes)', () => {
    const { status, signal, output } = run(selftest!);
    expect(signal, output).toBeNull();
    expect(status, output).toBe(0);
    expect(output).toContain('emu_selftest: all passed');
  });

  it.skipIf(!kernelTests)('CUDA kernels match the scalar reference', () => {
    const { status, signal, output } = run(kernelTests!);
    expect(signal, output).toBeNull();
    expect(status, output).toBe(0);
    expect(output).toMatch(/kvc_cuda_kernel_tests: \d+ checks, 0 failures/);
  }, 300_000);
});
