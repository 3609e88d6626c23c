// Reads vitest's JSON report and decides whether a run passed: the counts behind the
// "N passed, N failed" line of `npm test`, and the rules that keep a run from passing by
// running nothing: a file that fails to load is a failure, `0 passed` is a failure, and
// (strict mode, i.e. CI=true) every skipped or todo test must be listed with a reason in
// test/skips.json. Pure functions, so test/scripts/test-summary.test.ts can check them.
import { relative, sep } from 'node:path';

/** Statuses vitest's JSON reporter gives a test that did not run (skip, skipIf, todo). */
export const NOT_RUN = new Set(['skipped', 'pending', 'todo', 'disabled']);

/**
 * Parses the allow-list. Each entry names a file (path from the repository root) and a
 * test: its full name ("describe title" + " " + "test title", as vitest reports it), or a
 * prefix of it ending in "*". A reason is required: an entry without one is an error.
 */
export function parseAllowList(json) {
  const entries = Array.isArray(json?.skips) ? json.skips : [];
  const errors = [];
  const allow = [];
  entries.forEach((e, i) => {
    if (typeof e?.file !== 'string' || typeof e?.test !== 'string') {
      errors.push(`test/skips.json entry ${i}: needs "file" and "test"`);
    } else if (typeof e.reason !== 'string' || e.reason.trim().length < 10) {
      errors.push(`test/skips.json entry ${i} (${e.file}): needs a "reason" that says why`);
    } else {
      allow.push({ file: e.file, test: e.test, reason: e.reason });
    }
  });
  return { allow, errors };
}

function matches(entry, file, fullName) {
  if (entry.file !== file) return false;
  return entry.test.endsWith('*') ? fullName.startsWith(entry.test.slice(0, -1)) : fullName === entry.test;
}

/**
 * Counts one vitest JSON report.
 * @param report   the parsed JSON report (undefined when vitest wrote none)
 * @param options  { root: repository root, allow: parsed allow-list entries,
 *                   strict: unlisted skips fail (CI), nameFilter: a -t filter was given
 *                   (tests it deselects are reported as skipped and do not count) }
 * @returns { passed, failed, skipped: [{ file, name, status, reason? }], problems: string[] }
 *          where failed already includes one count per problem.
 */
export function summarize(report, { root = '', allow = [], strict = false, nameFilter = false } = {}) {
  const problems = [];
  if (!report) {
    return { passed: 0, failed: 1, skipped: [], problems: ['vitest wrote no report'] };
  }
  let passed = 0;
  let failed = 0;
  const skipped = [];
  for (const file of report.testResults ?? []) {
    const rel = root ? relative(root, file.name ?? '').split(sep).join('/') : (file.name ?? '');
    const tests = file.assertionResults ?? [];
    // A file that fails to load (syntax error, throwing import) has no tests to count.
    if (file.status === 'failed' && tests.length === 0) {
      problems.push(`${rel}: failed to load${file.message ? `: ${file.message}` : ''}`);
    }
    for (const t of tests) {
      if (t.status === 'passed') passed += 1;
      else if (t.status === 'failed') failed += 1;
      else if (NOT_RUN.has(t.status)) {
        const name = t.fullName ?? [...(t.ancestorTitles ?? []), t.title].join(' ');
        const entry = allow.find((e) => matches(e, rel, name));
        skipped.push({ file: rel, name, status: t.status, reason: entry?.reason });
      }
    }
  }
  if (strict && !nameFilter) {
    for (const s of skipped) {
      if (!s.reason) problems.push(`${s.file}: "${s.name}" was ${s.status} and is not listed in test/skips.json`);
    }
  }
  if (passed === 0) problems.push('0 tests passed');
  return { passed, failed: failed + problems.length, skipped, problems };
}

/** True when vitest's arguments select tests by name (-t / --testNamePattern). */
export function hasNameFilter(args) {
  return args.some((a) => a === '-t' || a.startsWith('-t=') || a.startsWith('--testNamePattern'));
}
