// Two processes share a compacted prefix: process A prefills a document on the real
// stories260K model, compacts it and puts it in the store; process B, started afterwards,
// matches and loads it and computes attention outputs and logits bit-identical to A's.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedRedis, tempDir, uniquePrefix } from './support';

const root = path.resolve(__dirname, '../..');
const child = path.join(__dirname, 'two-process-child.ts');

function run(role: 'put' | 'load', where: string, out: string, prefix: string): Record<string, unknown> {
  const stdout = execFileSync(process.execPath, ['--import', 'tsx', child, role, where, out], {
    cwd: root,
    env: { ...process.env, KVC_TEST_PREFIX: prefix },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

afterAll(async () => {
  await (await sharedRedis()).stop();
});

describe('two processes share a compacted prefix', () => {
  for (const backend of ['redis', 'directory'] as const) {
    it(`through ${backend}: B's attention outputs and logits equal A's bit for bit`, async () => {
      const dir = tempDir(`two-process-${backend}`);
      const where = backend === 'redis' ? (await sharedRedis()).url : path.join(dir, 'store');
      const prefix = uniquePrefix('two-process');
      const a = run('put', where, path.join(dir, 'a.bin'), prefix);
      expect(a['put']).toMatchObject({ kind: 'compacted', length: 300, entriesWritten: 1 });
      expect(a['rows']).toBeLessThan(300);
      const b = run('load', where, path.join(dir, 'b.bin'), prefix);
      expect(b).toMatchObject({ match: { length: 300, kind: 'compacted' }, length: 300, kind: 'compacted', rows: a['rows'] });
      expect(b['meta']).toEqual({ title: 'eval text, first 300 tokens' });
      const outA = readFileSync(path.join(dir, 'a.bin'));
      const outB = readFileSync(path.join(dir, 'b.bin'));
      expect(outA.length).toBeGreaterThan(0);
      expect(outB.equals(outA), 'bit-identical outputs').toBe(true);
      // and the outputs are real numbers, not a constant
      const f = new Float32Array(outA.buffer, outA.byteOffset, outA.length / 4);
      expect(f.every(Number.isFinite)).toBe(true);
      expect(new Set(f).size).toBeGreaterThan(100);
    });
  }
});
