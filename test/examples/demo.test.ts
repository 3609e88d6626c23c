// `npm run demo` end to end on small sizes: both parts print their tables, the shrinking part
// frees memory and compaction beats eviction at the same budget; `--model stories260K` prints
// the three caches' texts and their memory, for both shared models. (The default sizes are timed in BENCHMARKS.md.)
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const TSX = path.join(ROOT, 'node_modules/tsx/dist/cli.mjs');

function demo(args: string[]) {
  const r = spawnSync(process.execPath, [TSX, 'examples/demo.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('npm run demo', () => {
  it('shows memory and speed per format, then eviction against compaction at one budget', () => {
    const r = demo(['--tokens', '1024', '--steps', '4']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('1. Memory per token and decode speed per storage format: 1024 context tokens, 4 decode steps');
    for (const f of ['f32', 'f16', 'bf16', 'int8 rotated', 'K int8 / V int4 rotated', 'int4 rotated']) expect(r.stdout).toContain(`\n${f} `);
    expect(r.stdout).toContain('2. Shrinking the cache to 10% of its rows');
    // Every method keeps 103 of 1024 rows per stream and frees the same memory.
    const rows = r.stdout.split('\n').filter((l) => /^(evict|compact): /.test(l));
    expect(rows.length).toBe(6);
    for (const l of rows) expect(l).toMatch(/ 103 +\d/);
    const [, compaction, eviction] = /compaction's error is ([\d.]+) against ([\d.]+) for the best eviction policy/.exec(r.stdout) ?? [];
    expect(Number(compaction)).toBeLessThan(Number(eviction));
    // Not a terminal: progress comes as occasional lines on stderr, never carriage returns.
    expect(r.stderr).not.toContain('\r');
    expect(r.stdout).not.toContain('\r');
  });

  it('--model stories260K generates text over an f32, a quantized and a compacted cache', () => {
    const r = demo(['--model', 'stories260K', '--steps', '12', '--context', '64']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('Context: 64 tokens of tinystories_eval.txt; then 12 greedy tokens.');
    expect(r.stdout).toMatch(/f32 cache +│ K int8 \/ V int4 rotated g8 cache +│ f32 cache compacted to 25%/);
    expect(r.stdout).toMatch(/f32 cache compacted to 25% +22\.5 KiB +4\.00×/); // 16 of 64 rows × 1440 B
    expect(r.stdout).toContain('rows 1280 → 320');
  });

  it('--model shakes64 (a character-level tokenizer without byte fallback) works the same way', () => {
    const r = demo(['--model', 'shakes64', '--steps', '8', '--context', '48']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('Context: 48 tokens of shakespeare_val.passages.txt; then 8 greedy tokens.');
    expect(r.stdout).toContain('rows 384 → 96'); // 4 layers × 2 kv heads × 48 rows, kept 25%
  });
});
