// Runs every example of docs/engine-guide.md as a consumer would: each `ts` block is a
// program of its own, executed in a fresh Node process from a temporary project whose
// node_modules/kvcompact resolves to this checkout's lib/ (compiled by tsx's require hook,
// which a worker thread registers too), so `import ... from 'kvcompact'`, worker threads and
// relative imports behave as in an engine.
// Blocks marked `file=NAME` are written beside the programs first. The blocks assert what
// the guide claims; a failing block fails its test with the block's line in the guide.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { extractSnippets } from '../support/markdown-snippets';

const ROOT = path.resolve(__dirname, '../..');
const GUIDE = path.join(ROOT, 'docs/engine-guide.md');
const snippets = extractSnippets(readFileSync(GUIDE, 'utf8'));
const programs = snippets.filter((s) => s.lang === 'ts' && !s.file);
const files = snippets.filter((s) => s.file);

const dir = mkdtempSync(path.join(tmpdir(), 'kvcompact-guide-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function setUpProject(): Promise<void> {
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  const pkg = path.join(dir, 'node_modules/kvcompact');
  mkdirSync(pkg, { recursive: true });
  const lib = path.join(ROOT, 'lib/index.ts');
  writeFileSync(
    path.join(pkg, 'package.json'),
    JSON.stringify({ name: 'kvcompact', exports: { import: './index.mjs', require: './index.cjs' } }),
  );
  const names = Object.keys(await import('../../lib/index')).filter((n) => n !== 'default');
  writeFileSync(
    path.join(pkg, 'index.mjs'),
    `import { createRequire } from 'node:module';\nconst lib = createRequire(import.meta.url)('./index.cjs');\n` +
      `export const { ${names.join(', ')} } = lib;\n`,
  );
  const register = path.join(ROOT, 'node_modules/tsx/dist/cjs/api/index.cjs');
  writeFileSync(path.join(pkg, 'index.cjs'), `require(${JSON.stringify(register)}).register();\nmodule.exports = require(${JSON.stringify(lib)});\n`);
  for (const f of files) writeFileSync(path.join(dir, f.file!), f.code);
}
await setUpProject();

const tsx = pathToFileURL(path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href;

describe('docs/engine-guide.md', () => {
  it('has the examples the guide promises', () => {
    expect(programs.length).toBeGreaterThanOrEqual(9);
    expect(files.map((f) => f.file)).toEqual(['toy-engine.ts', 'decode-worker.mjs']);
    // Every block is either run or imported: nothing in the guide goes untested.
    expect(snippets.filter((s) => s.lang !== 'ts' && !s.file)).toEqual([]);
  });

  for (const [i, s] of programs.entries()) {
    const heading = readFileSync(GUIDE, 'utf8').split('\n').slice(0, s.line).reverse().find((l) => l.startsWith('## '));
    it(`example ${i + 1} (line ${s.line}, ${heading?.slice(3) ?? 'intro'}) runs and its assertions hold`, () => {
      const file = path.join(dir, `example-${i + 1}.ts`);
      writeFileSync(file, s.code);
      const run = spawnSync(process.execPath, ['--import', tsx, file], {
        cwd: dir,
        encoding: 'utf8',
        timeout: 120_000,
        env: { ...process.env, NODE_OPTIONS: '' },
      });
      const detail = `docs/engine-guide.md line ${s.line}:\n${run.stdout}\n${run.stderr}`;
      expect(run.status, detail).toBe(0);
    });
  }
});
