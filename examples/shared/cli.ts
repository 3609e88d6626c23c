// Command lines of the demo, the evaluation and the benchmarks: node:util parseArgs in strict
// mode (unknown options and stray arguments are errors, with the closest known option
// suggested), generated usage text, and checked numbers. A script declares its options once,
// as a table with a description per option, and adding one is one entry in that table.
import { parseArgs } from 'node:util';

export interface CliOption {
  type: 'string' | 'boolean';
  /** shown in the usage text */
  description: string;
  /** shown as `--name VALUE` */
  value?: string;
  short?: string;
  /** a string option that may only take these values */
  choices?: readonly string[];
}

export type CliOptions = Record<string, CliOption>;

/** The parsed values: strings for string options, booleans for boolean ones. */
export type CliValues<O extends CliOptions> = {
  [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string;
};

/** A wrong command line: the message says what and how to get the usage. Exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface CliSpec<O extends CliOptions> {
  /** e.g. "npm run demo --" */
  command: string;
  /** one paragraph under the usage line */
  summary: string;
  options: O;
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const next = Math.min(row[j]! + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = row[j]!;
      row[j] = next;
    }
  }
  return row[b.length]!;
}

function suggestion(name: string, options: CliOptions): string {
  const known = [...Object.keys(options), 'help'];
  let best = '';
  let bestD = Infinity;
  for (const k of known) {
    const d = distance(name, k);
    if (d < bestD) (best = k), (bestD = d);
  }
  return bestD <= Math.max(2, Math.floor(name.length / 3)) ? ` (did you mean --${best}?)` : '';
}

/** Parses `argv` (without node and the script). `--help` / `-h` is always accepted. */
export function parseCli<O extends CliOptions>(spec: CliSpec<O>, argv: readonly string[]): CliValues<O> & { help?: boolean } {
  const config: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, o] of Object.entries(spec.options)) config[name] = { type: o.type, ...(o.short ? { short: o.short } : {}) };
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: [...argv], options: config, strict: true, allowPositionals: false, allowNegative: true }).values;
  } catch (err) {
    const e = err as Error & { code?: string };
    const see = `; see ${spec.command} --help`;
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const opt = /'(-{1,2}[^']*)'/.exec(e.message)?.[1] ?? '?';
      const bare = opt.replace(/^-+/, '').replace(/^no-/, '').split('=')[0]!;
      throw new UsageError(`unknown option ${opt}${suggestion(bare, spec.options)}${see}`);
    }
    if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      const arg = /'([^']*)'/.exec(e.message)?.[1] ?? '?';
      throw new UsageError(`unexpected argument '${arg}' (options are written --name value)${see}`);
    }
    if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const opt = /--([\w-]+)/.exec(e.message)?.[1];
      const o = opt ? spec.options[opt] : undefined;
      throw new UsageError(
        o?.type === 'string' ? `--${opt} needs a value (--${opt} ${o.value ?? 'VALUE'})${see}` : `${e.message}${see}`,
      );
    }
    throw err;
  }
  for (const [name, o] of Object.entries(spec.options)) {
    const v = values[name];
    if (typeof v === 'string' && o.choices && !o.choices.includes(v)) {
      throw new UsageError(`--${name} must be one of ${o.choices.join(', ')}, got '${v}'`);
    }
  }
  return values as CliValues<O> & { help?: boolean };
}

/** The usage text: the command, the summary, one line per option. */
export function usage<O extends CliOptions>(spec: CliSpec<O>): string {
  const rows = Object.entries(spec.options).map(([name, o]) => {
    const flag = o.type === 'boolean' ? `--${name}` : `--${name} ${o.value ?? (o.choices ? o.choices.join('|') : 'VALUE')}`;
    return [o.short ? `-${o.short}, ${flag}` : flag, o.description] as const;
  });
  rows.push(['-h, --help', 'this text']);
  const width = Math.min(30, Math.max(...rows.map(([f]) => f.length)));
  const lines = rows.map(([f, d]) => (f.length > width ? `  ${f}\n  ${''.padEnd(width)}  ${d}` : `  ${f.padEnd(width)}  ${d}`));
  return `usage: ${spec.command} [options]\n\n${spec.summary}\n\n${lines.join('\n')}\n`;
}

/** An optional positive integer option: `fallback` when absent, a UsageError when not a positive integer. */
export function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${value}'`);
  return n;
}

/** An optional number in [min, max]. */
export function numberIn(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number in [${min}, ${max}], got '${value}'`);
  return n;
}

/** An optional comma-separated list of ratios in (0, 1): undefined when absent (the caller's default). */
export function ratioList(name: string, value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  // An empty part is NaN (Number('') would be 0), and NaN fails the range test.
  const ratios = value.split(',').map((x) => (x.trim() === '' ? NaN : Number(x)));
  if (ratios.some((r) => !(r > 0 && r < 1))) {
    throw new UsageError(`--${name} must be comma-separated numbers in (0, 1), got '${value}'`);
  }
  return ratios;
}

/**
 * Runs a script's main: --help prints the usage and exits 0; a UsageError prints its message
 * and exits 2; any other error prints its message (stack with KVCOMPACT_DEBUG) and exits 1.
 */
export function runMain(main: () => Promise<void> | void): void {
  Promise.resolve()
    .then(main)
    .catch((err: unknown) => {
      if (err instanceof UsageError) {
        console.error(`error: ${err.message}`);
        process.exitCode = 2;
        return;
      }
      console.error(err instanceof Error ? (process.env['KVCOMPACT_DEBUG'] ? (err.stack ?? err.message) : err.message) : err);
      process.exitCode = 1;
    });
}
