// The rules of `npm test` (scripts/test-summary.mjs) on hand-made vitest JSON reports: what
// counts as passed and failed, which skips fail a CI run, and that a run where nothing
// passed (no native executables, a filter matching nothing) never reports success.
import { describe, expect, it } from 'vitest';

import { hasNameFilter, parseAllowList, summarize } from '../../scripts/test-summary.mjs';

const ROOT = '/repo';
type Status = 'passed' | 'failed' | 'skipped' | 'pending' | 'todo';

function file(name: string, tests: Array<[string, Status]>, status = 'passed') {
  return {
    name: `${ROOT}/${name}`,
    status,
    message: '',
    assertionResults: tests.map(([title, s]) => ({ ancestorTitles: ['suite'], fullName: `suite ${title}`, title, status: s })),
  };
}

const allow = parseAllowList({
  skips: [
    { file: 'test/a.test.ts', test: 'suite needs avx2', reason: 'nothing to compare without AVX2' },
    { file: 'test/a.test.ts', test: 'suite level *', reason: 'the level list depends on the CPU' },
  ],
}).allow;

describe('test summary', () => {
  it('counts passed and failed tests, and lists every skipped, pending and todo test', () => {
    const report = {
      testResults: [
        file('test/a.test.ts', [['one', 'passed'], ['two', 'failed'], ['needs avx2', 'skipped']]),
        file('test/b.test.ts', [['three', 'passed'], ['later', 'todo'], ['queued', 'pending']]),
      ],
    };
    const s = summarize(report, { root: ROOT, allow, strict: false });
    expect(s.passed).toBe(2);
    expect(s.failed).toBe(1);
    expect(s.problems).toEqual([]);
    expect(s.skipped.map((x) => [x.file, x.name, x.status, x.reason])).toEqual([
      ['test/a.test.ts', 'suite needs avx2', 'skipped', 'nothing to compare without AVX2'],
      ['test/b.test.ts', 'suite later', 'todo', undefined],
      ['test/b.test.ts', 'suite queued', 'pending', undefined],
    ]);
  });

  it('in strict mode (CI) each unlisted skip, todo or pending test is one failure', () => {
    const report = {
      testResults: [
        file('test/a.test.ts', [['one', 'passed'], ['needs avx2', 'skipped'], ['level avx2 vs portable', 'skipped']]),
        file('test/b.test.ts', [['later', 'todo'], ['gone', 'skipped'], ['queued', 'pending']]),
      ],
    };
    const s = summarize(report, { root: ROOT, allow, strict: true });
    expect(s.passed).toBe(1);
    expect(s.failed).toBe(3);
    expect(s.problems).toHaveLength(3);
    expect(s.problems.join('\n')).toContain('test/b.test.ts: "suite gone" was skipped');
    // The same name in another file is not covered by an entry for test/a.test.ts.
    const other = summarize({ testResults: [file('test/c.test.ts', [['x', 'passed'], ['needs avx2', 'skipped']])] },
      { root: ROOT, allow, strict: true });
    expect(other.failed).toBe(1);
  });

  it('a name filter (-t) deselects tests without failing the run', () => {
    const report = { testResults: [file('test/a.test.ts', [['one', 'passed'], ['other', 'skipped']])] };
    expect(summarize(report, { root: ROOT, allow, strict: true, nameFilter: true }).failed).toBe(0);
    expect(hasNameFilter(['-t', 'x'])).toBe(true);
    expect(hasNameFilter(['--testNamePattern=x'])).toBe(true);
    expect(hasNameFilter(['test/foundation'])).toBe(false);
  });

  it('0 passed is a failure, even with nothing failed or everything skipped', () => {
    expect(summarize({ testResults: [] }, { root: ROOT }).failed).toBe(1);
    const allSkipped = { testResults: [file('test/a.test.ts', [['needs avx2', 'skipped']])] };
    const s = summarize(allSkipped, { root: ROOT, allow, strict: true });
    expect(s.passed).toBe(0);
    expect(s.problems).toEqual(['0 tests passed']);
    expect(s.failed).toBe(1);
  });

  it('a file that fails to load counts as a failure; a missing report counts as one', () => {
    const report = { testResults: [file('test/a.test.ts', [['one', 'passed']]), { ...file('test/broken.test.ts', [], 'failed'), message: 'SyntaxError' }] };
    const s = summarize(report, { root: ROOT });
    expect(s.passed).toBe(1);
    expect(s.failed).toBe(1);
    expect(s.problems[0]).toContain('test/broken.test.ts: failed to load: SyntaxError');
    expect(summarize(undefined).failed).toBe(1);
  });

  it('an allow-list entry without a reason is rejected', () => {
    const { allow: ok, errors } = parseAllowList({
      skips: [{ file: 'f', test: 't' }, { file: 'f', test: 't', reason: 'because' }, { test: 't', reason: 'long enough reason' }],
    });
    expect(ok).toEqual([]);
    expect(errors).toHaveLength(3);
  });
});
