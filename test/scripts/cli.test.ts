// Command lines of the demo, the evaluation and the benchmarks (examples/shared/cli.ts):
// strict parsing with suggestions, generated usage, checked numbers, and the demo's table.
import { describe, expect, it } from 'vitest';
import { numberIn, parseCli, positiveInt, ratioList, usage, UsageError, type CliOptions, type CliSpec } from '../../examples/shared/cli';
import { DEMO_OPTIONS, DEMO_SPEC, DEMO_USAGE, parseDemoArgs } from '../../examples/demo/args';

const spec = {
  command: 'tool --',
  summary: 'A tool.',
  options: {
    tokens: { type: 'string', value: 'N', description: 'how many tokens' },
    rotate: { type: 'boolean', description: 'rotate' },
    part: { type: 'string', choices: ['append', 'decode'], description: 'one part' },
  },
} satisfies CliSpec<CliOptions>;

function usageError(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('no UsageError');
}

describe('parseCli', () => {
  it('parses values, --name=value, booleans and their negation', () => {
    expect({ ...parseCli(spec, ['--tokens', '12', '--rotate']) }).toEqual({ tokens: '12', rotate: true });
    expect({ ...parseCli(spec, ['--tokens=7', '--no-rotate', '--part', 'decode']) }).toEqual({ tokens: '7', rotate: false, part: 'decode' });
    expect({ ...parseCli(spec, ['-h']) }).toEqual({ help: true });
    expect({ ...parseCli(spec, []) }).toEqual({});
  });

  it('rejects a misspelled option and suggests the closest one', () => {
    expect(usageError(() => parseCli(spec, ['--tokns', '3']))).toBe('unknown option --tokns (did you mean --tokens?); see tool -- --help');
    expect(usageError(() => parseCli(spec, ['--rotat']))).toContain('did you mean --rotate?');
    expect(usageError(() => parseCli(spec, ['--halp']))).toContain('did you mean --help?');
    // Nothing close: no suggestion.
    expect(usageError(() => parseCli(spec, ['--zzzzzzzz']))).toBe('unknown option --zzzzzzzz; see tool -- --help');
  });

  it('rejects stray arguments, a missing value and a value outside the choices', () => {
    expect(usageError(() => parseCli(spec, ['12']))).toContain("unexpected argument '12'");
    expect(usageError(() => parseCli(spec, ['--tokens']))).toBe('--tokens needs a value (--tokens N); see tool -- --help');
    expect(usageError(() => parseCli(spec, ['--part', 'both']))).toBe("--part must be one of append, decode, got 'both'");
  });

  it('checks numbers', () => {
    expect(positiveInt('n', undefined, 5)).toBe(5);
    expect(positiveInt('n', '12', 5)).toBe(12);
    for (const bad of ['0', '-3', '1.5', 'abc', '', ' ']) expect(usageError(() => positiveInt('n', bad, 5))).toContain('--n must be a positive integer');
    expect(numberIn('keep', '0.25', 0.1, 0.01, 0.99)).toBe(0.25);
    expect(usageError(() => numberIn('keep', '1.5', 0.1, 0.01, 0.99))).toBe("--keep must be a number in [0.01, 0.99], got '1.5'");
    expect(ratioList('ratios', undefined)).toBeUndefined();
    expect(ratioList('ratios', '0.0625,0.25, 0.5')).toEqual([0.0625, 0.25, 0.5]);
    for (const bad of ['', '0', '1', '0.1,', '0.1,,0.2', 'x', '-0.1', '0.5,2']) {
      expect(usageError(() => ratioList('ratios', bad))).toBe(`--ratios must be comma-separated numbers in (0, 1), got '${bad}'`);
    }
  });

  it('writes a usage line per option, --help included', () => {
    const text = usage(spec);
    expect(text.startsWith('usage: tool -- [options]\n\nA tool.\n')).toBe(true);
    expect(text).toMatch(/--tokens N +how many tokens/);
    expect(text).toMatch(/--part append\|decode +one part/);
    expect(text).toMatch(/-h, --help +this text/);
  });
});

describe('the demo command line', () => {
  it('has defaults that need no files', () => {
    const { parsed, ...a } = parseDemoArgs([]);
    expect(a).toEqual({ help: false, tokens: 4096, chunk: 512, keys: 'int8', values: 'int4', rotate: true });
    expect({ ...parsed }).toEqual({});
    expect({ ...parseDemoArgs(['--tokens', '64']).parsed }).toEqual({ tokens: '64' });
  });

  it('takes --model by name, as a bare flag (the default model) and with its own options', () => {
    expect(parseDemoArgs(['--model', 'shakes64']).model).toBe('shakes64');
    expect(parseDemoArgs(['--model']).model).toBe('stories260K');
    expect(parseDemoArgs(['--model', '--steps', '9'])).toMatchObject({ model: 'stories260K', steps: 9 });
    expect(parseDemoArgs(['--model', 'stories260K', '--no-rotate', '--keys', 'int4', '--keep', '0.5'])).toMatchObject({
      rotate: false, keys: 'int4', keep: 0.5,
    });
  });

  it('rejects typos, bad numbers and --model options without --model', () => {
    expect(usageError(() => parseDemoArgs(['--tokns', '10']))).toContain('did you mean --tokens?');
    expect(usageError(() => parseDemoArgs(['--tokens', '0']))).toContain('--tokens must be a positive integer');
    expect(usageError(() => parseDemoArgs(['--keys', 'int3', '--model']))).toContain('--keys must be one of f32, f16, bf16, int8, int4');
    expect(usageError(() => parseDemoArgs(['--text', 'hello']))).toBe('--text is an option of --model; see npm run demo -- --help');
    expect(usageError(() => parseDemoArgs(['--keep', '1']))).toContain('--keep must be a number in');
  });

  it('lists every option in its usage, from the one table', () => {
    for (const name of Object.keys(DEMO_OPTIONS)) expect(DEMO_USAGE).toContain(`--${name}`);
    expect(DEMO_SPEC.command).toBe('npm run demo --');
  });
});
