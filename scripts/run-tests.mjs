// `npm test`: runs the vitest suite and ends with one summary line "N passed, N failed"
// (the line CI reads). Extra arguments go to vitest (e.g. a file filter). The rules that
// turn a report into that line live in test-summary.mjs: with CI=true a skipped test fails
// the run unless test/skips.json lists it with a reason, and a run where nothing passed fails.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

import { hasNameFilter, parseAllowList, summarize } from './test-summary.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const strict = process.env.CI === 'true' || process.env.CI === '1';
// One results file per run, so that concurrent runs do not read each other's counts.
const results = join(tmpdir(), `kvcompact-vitest-${process.pid}.json`);
rmSync(results, { force: true });
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
const run = spawnSync(
  process.execPath,
  [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${results}`, ...args],
  { cwd: root, stdio: 'inherit' },
);

let report;
if (existsSync(results)) {
  report = JSON.parse(readFileSync(results, 'utf8'));
  rmSync(results, { force: true });
}
const { allow, errors } = parseAllowList(JSON.parse(readFileSync(join(root, 'test', 'skips.json'), 'utf8')));
const summary = summarize(report, { root, allow, strict, nameFilter: hasNameFilter(args) });
summary.problems.unshift(...errors);
summary.failed += errors.length;

if (summary.skipped.length > 0) {
  console.log(`\nNot run (${summary.skipped.length}):`);
  for (const s of summary.skipped) {
    console.log(`  ${s.status}: ${s.file} > ${s.name}${s.reason ? `  [allowed: ${s.reason}]` : ''}`);
  }
}
if (summary.problems.length > 0) {
  console.log(`\nThe run fails because:`);
  for (const p of summary.problems) console.log(`  - ${p}`);
}
let { failed } = summary;
if (run.status !== 0 && failed === 0) failed = 1;
console.log(`${summary.passed} passed, ${failed} failed`);
process.exit(failed === 0 && run.status === 0 ? 0 : 1);
