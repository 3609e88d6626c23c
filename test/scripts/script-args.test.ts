// The scripts as a user runs them: `--help` prints the usage and exits 0, a misspelled option
// exits 2 with a suggestion (nothing runs), and `npm run eval` finds its model, tokenizer and
// text through KVCOMPACT_SHARED_DIR.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SHARED_DIR } from '../../examples/llama2c/paths';

const ROOT = path.resolve(__dirname, '../..');
const TSX = path.join(ROOT, 'node_modules/tsx/dist/cli.mjs');

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a script under tsx; the processes of this file run concurrently (each mostly waits on startup). */
function run(script: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TSX, script, ...args], { cwd: ROOT, env: { ...process.env, ...env }, timeout: 120_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const SCRIPTS = [
  { script: 'bench/kernels.bench.ts', command: 'npm run bench --', typo: ['--quik'], suggestion: '--quick' },
  { script: 'bench/attention.bench.ts', command: 'npm run bench:attention --', typo: ['--quik'], suggestion: '--quick' },
  { script: 'bench/quantization.bench.ts', command: 'npx tsx bench/quantization.bench.ts', typo: ['--prat', 'append'], suggestion: '--part' },
  { script: 'bench/eviction.bench.ts', command: 'npx tsx bench/eviction.bench.ts', typo: ['--stream', 'stories'], suggestion: '--streams' },
  { script: 'bench/compactor.bench.ts', command: 'npx tsx bench/compactor.bench.ts', typo: ['--run', '3'], suggestion: '--runs' },
  { script: 'bench/lowrank.bench.ts', command: 'npx tsx bench/lowrank.bench.ts', typo: ['--quikc'], suggestion: '--quick' },
  { script: 'bench/prefix-store.bench.ts', command: 'npx tsx bench/prefix-store.bench.ts', typo: ['--runz', '3'], suggestion: '--runs' },
  { script: 'bench/sparse.bench.ts', command: 'npx tsx bench/sparse.bench.ts', typo: ['--token', '4096'], suggestion: '--tokens' },
  { script: 'bench/sparse-recall.bench.ts', command: 'npx tsx bench/sparse-recall.bench.ts', typo: ['--window', '2'], suggestion: '--windows' },
  { script: 'examples/demo.ts', command: 'npm run demo --', typo: ['--tokns', '100'], suggestion: '--tokens' },
  { script: 'examples/eval.ts', command: 'npm run eval --', typo: ['--storys', '2'], suggestion: '--stories' },
  { script: 'examples/eval/chart-cli.ts', command: 'npm run eval:chart --', typo: ['--outt', 'x.svg'], suggestion: '--out' },
];

describe('script command lines', () => {
  const started = SCRIPTS.map((s) => ({ help: run(s.script, ['--help']), typo: run(s.script, s.typo) }));
  const choice = run('bench/quantization.bench.ts', ['--part', 'everything']);
  const badNumber = run('bench/sparse.bench.ts', ['--tokens', '4096,lots']);
  for (const [i, s] of SCRIPTS.entries()) {
    it(`${s.script}: --help prints the usage; ${s.typo[0]} is rejected`, async () => {
      const help = await started[i]!.help;
      expect(help.status, help.stderr).toBe(0);
      expect(help.stdout.startsWith(`usage: ${s.command} [options]`)).toBe(true);
      expect(help.stdout).toContain('-h, --help');
      const typo = await started[i]!.typo;
      expect(typo.status).toBe(2);
      expect(typo.stderr).toContain(`error: unknown option ${s.typo[0]} (did you mean ${s.suggestion}?)`);
      expect(typo.stdout).toBe('');
    });
  }

  it('bench: a value outside the choices is rejected before anything runs', async () => {
    const r = await choice;
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--part must be one of all, append, decode, got 'everything'");
  });

  it('bench: a malformed number is rejected before anything runs', async () => {
    const r = await badNumber;
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--tokens must be a positive integer, got 'lots'");
  });
});

describe('npm run eval and KVCOMPACT_SHARED_DIR', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kvcompact-shared-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the model, tokenizer and text from the directory it names', async () => {
    for (const sub of ['models', 'data']) mkdirSync(path.join(dir, sub));
    for (const f of ['models/stories260K.bin', 'models/tok512.bin', 'data/tinystories_eval.txt']) symlinkSync(path.join(SHARED_DIR, f), path.join(dir, f));
    const ok = await run('examples/eval.ts', ['--list', '--stories', '1'], { KVCOMPACT_SHARED_DIR: dir });
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^f32 /);
    const missing = path.join(dir, 'nowhere');
    const bad = await run('examples/eval.ts', ['--list'], { KVCOMPACT_SHARED_DIR: missing });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain(path.join(missing, 'models/stories260K.bin'));
  });
});
