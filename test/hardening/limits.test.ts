// Resource limits end in a KVCacheError, never in an abort or a hang. A child process runs
// limits-child.ts (bundled to plain JavaScript first: under an address-space limit the
// TypeScript loader's WebAssembly cannot even start) under prlimit:
//   --nproc: 256 threads cannot start -> OUT_OF_MEMORY from new KVCache(), compact() and
//            compactSync(); the pool joins the threads it started (no hang: a timeout)
//   --as:    host allocations fail -> OUT_OF_MEMORY from synchronous calls and compact();
//            the sequence is unchanged and usable afterwards
// Root ignores the process limit, so as root the child runs as 'nobody' (setpriv).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
// Inside the package (build/ is ignored by git) so that the bundle finds the addon as usual.
const BUNDLE = path.join(ROOT, 'build', 'test-bundles', 'limits-child.cjs');
const isRoot = process.getuid?.() === 0;

function which(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

interface ChildResult { status: number | null; signal: string | null; cases: Record<string, string>; stderr: string }

function runChild(mode: string, limit: string[], asUser: boolean): ChildResult {
  const prefix = asUser ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : [];
  const [cmd, ...args] = [...prefix, 'prlimit', ...limit, process.execPath, '--expose-gc', BUNDLE, mode];
  const r = spawnSync(cmd!, args, { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  const cases: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('{')) {
      const { case: name, code } = JSON.parse(line) as { case: string; code: string };
      cases[name] = code;
    }
  }
  expect(r.error, 'the child ended by itself (no hang)').toBeUndefined();
  return { status: r.status, signal: r.signal, cases, stderr: r.stderr };
}

beforeAll(() => {
  buildSync({ entryPoints: [path.join(__dirname, 'limits-child.ts')], bundle: true, platform: 'node', format: 'cjs',
    outfile: BUNDLE, logLevel: 'warning' });
  // 'nobody' must be able to read the bundle and the addon, and so reach them: a checkout in
  // a private directory (mktemp -d is 0700) gets search permission (o+x, not read) on the
  // directories above it, when the test runs as root, the only case that uses 'nobody'.
  fs.chmodSync(BUNDLE, 0o644);
  if (isRoot) {
    for (let dir = ROOT; dir !== path.dirname(dir); dir = path.dirname(dir)) {
      const mode = fs.statSync(dir).mode;
      if ((mode & 0o001) === 0) fs.chmodSync(dir, (mode & 0o7777) | 0o001);
    }
  }
});

describe('resource limits give KVCacheErrors', () => {
  // Linux tools (util-linux, procps); elsewhere these limits are not set this way.
  const linux = process.platform === 'linux' && which('prlimit');
  it.skipIf(!linux || (isRoot ? !which('setpriv') : !which('ps')))('threads: 256 under a process limit', () => {
    // Threads of this user already running, plus room for Node's own threads: the pool
    // starts some of its 255 threads and then fails.
    const mine = isRoot ? 0 : Number(spawnSync('sh', ['-c', `ps -L -u ${os.userInfo().uid} | wc -l`], { encoding: 'utf8' }).stdout);
    const r = runChild('threads', [`--nproc=${mine + 60}`], isRoot);
    const detail = `status ${r.status}, signal ${r.signal}\n${r.stderr.slice(-3000)}`;
    expect(r.signal, detail).toBeNull();
    expect(r.status, detail).toBe(0);
    expect(r.cases, detail).toEqual({
      'new KVCache threads 256': 'OUT_OF_MEMORY',
      'compact threads 256': 'OUT_OF_MEMORY',
      'compactSync threads 256': 'OUT_OF_MEMORY',
      'append after': 'ok',
      'rows after': '513',
    });
  }, 150_000);

  // 2 and 3 GiB: every case runs out of memory where it should and nothing aborts. Before each
  // thread reserved its thread-local data on entry (kvc/thread_locals.h), a compaction thread
  // whose first exception was the bad_alloc itself made glibc abort the process while
  // allocating the addon's TLS block (the static C++ runtime's exception globals live there).
  for (const gib of [2, 3]) {
    it.skipIf(!linux)(`memory: an address-space limit of ${gib} GiB`, () => {
      const r = runChild('memory', [`--as=${gib * 2 ** 30}`], false);
      const detail = `status ${r.status}, signal ${r.signal}\n${r.stderr.slice(-3000)}`;
      expect(r.signal, detail).toBeNull();
      expect(r.status, detail).toBe(0);
      expect(r.cases, detail).toEqual({
        'warm-up compact': 'ok',
        export: 'OUT_OF_MEMORY',
        compact: 'OUT_OF_MEMORY',
        compactSync: 'OUT_OF_MEMORY',
        'append after': 'ok',
        'export after release': 'ok',
        'rows after': '8193',
      });
    }, 150_000);
  }
});
