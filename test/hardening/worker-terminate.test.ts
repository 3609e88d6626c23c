// A worker_thread that is terminated (or calls process.exit()) while compact() runs, or in
// the middle of a loop of synchronous native calls, must not take the process down: the
// completion of the pending work runs in an environment that is shutting down, where nothing
// can be thrown into JavaScript any more (NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS, the
// environment cleanup hook of cpp/binding/addon.cpp, guarded completions). Each scenario
// runs 20 times in a child process whose exit status must be 0.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const TSX = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const CHILD = path.join(__dirname, 'terminate-child.ts');

function run(mode: string, count: number): void {
  const r = spawnSync(process.execPath, [TSX, CHILD, mode, String(count)], {
    cwd: ROOT, encoding: 'utf8', timeout: 240_000, maxBuffer: 16 << 20,
  });
  const detail = `status ${r.status}, signal ${r.signal}\n${r.stderr.slice(-4000)}`;
  expect(r.signal, detail).toBeNull();
  expect(r.status, detail).toBe(0);
  expect(r.stderr, 'nothing printed by a dying environment').not.toMatch(/terminate called|FATAL ERROR|Aborted/);
  const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
  expect(last).toEqual({ mode, ended: count });
}

describe('ending a worker_thread mid-work leaves the process alive', () => {
  it('terminate() during compact(), 20 times', () => run('compact', 20), 250_000);
  it('terminate() during a loop of synchronous calls, 20 times', () => run('sync', 20), 250_000);
  it('process.exit() inside the worker during compact(), 20 times', () => run('exit', 20), 250_000);
});
