// Shared helpers of the benchmarks: the command line (examples/shared/cli.ts), progress, the
// read-bandwidth floor, cold working sets, medians and markdown tables.
import { writeFileSync } from 'node:fs';

import { Bench } from 'tinybench';

import { native } from '../../lib/native/binding';
import { parseCli, UsageError, usage, type CliOptions, type CliValues } from '../../examples/shared/cli';
import { Progress } from '../../examples/shared/progress';

export interface BenchArgs<O extends CliOptions> {
  json?: string;
  quick: boolean;
  /** the script's own options */
  values: CliValues<O>;
}

const COMMON_OPTIONS = {
  json: { type: 'string', value: 'FILE', description: 'also write the results as JSON to FILE' },
  quick: { type: 'boolean', description: 'fewer sizes and shorter timing (a smoke run)' },
} satisfies CliOptions;

/**
 * The command line of a benchmark script: --json FILE, --quick, --help and the script's own
 * options, parsed strictly (a misspelled option is an error, not silently ignored). --help
 * prints the usage and exits 0; a wrong command line prints why and exits 2.
 */
export function parseBenchArgs<O extends CliOptions>(
  spec: { command: string; summary: string; options?: O },
  argv = process.argv.slice(2),
): BenchArgs<O> {
  const full = { command: spec.command, summary: spec.summary, options: { ...COMMON_OPTIONS, ...(spec.options ?? ({} as O)) } };
  try {
    const v = parseCli(full, argv);
    if (v.help) {
      process.stdout.write(usage(full));
      process.exit(0);
    }
    const json = v.json as string | undefined;
    return { ...(json !== undefined ? { json } : {}), quick: v.quick === true, values: v as CliValues<O> };
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`error: ${err.message}`);
    process.exit(2);
  }
}

/** Runs `read` (option values checked with examples/shared/cli.ts); a UsageError prints and exits 2. */
export function checkedArgs<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`error: ${err.message}`);
    process.exit(2);
  }
}

/** Median seconds of `runs` timed calls of fn. */
export function medianSeconds(fn: () => void, runs: number): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/**
 * Read bandwidth (bytes/s) over `bytes` (≥ 1 GiB so that no cache level holds it, rounded to
 * whole MiB) with `threads` threads: the faster of two native read loops, each the median of
 * `runs` passes (addon `readFloor`). The buffer is mapped the way the block pool is (huge
 * pages where the OS offers them): a JavaScript buffer of 4 KiB pages reads about 20% slower
 * on some machines, which would flatter every ratio to it.
 */
export function readBandwidth(bytes: number, threads: number, runs = 7): number {
  return native().readFloor(Math.max(1, Math.round(bytes / 2 ** 20)), threads, runs);
}

/**
 * Peak f32 multiply-adds per second of one thread (independent vector FMA chains, the widest
 * vectors the kernels use on this CPU): the arithmetic floor beside the bandwidth floor.
 */
export function fmaPeak(runs = 7): { perSecond: number; lanes: number } {
  const addon = native();
  const iterations = 20_000_000;
  const probe = addon.fmaProbe(iterations / 10); // warm
  return { perSecond: probe.multiplyAdds * 10 / medianSeconds(() => addon.fmaProbe(iterations), runs), lanes: probe.lanes };
}

/** Median milliseconds per call of fn under tinybench (warm-up included). */
export async function tinybenchMedianMs(name: string, fn: () => void, timeMs = 1000): Promise<number> {
  const bench = new Bench({ time: timeMs, warmupTime: 200 });
  bench.add(name, fn);
  await bench.run();
  const result = bench.tasks[0]!.result as { latency?: { p50?: number } } | undefined;
  const p50 = result?.latency?.p50;
  if (p50 === undefined) throw new Error(`benchmark ${name} produced no result`);
  return p50;
}

export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export function writeJson(path: string | undefined, data: unknown): void {
  if (!path) return;
  writeFileSync(path, JSON.stringify(data, null, 2) + '\n');
  console.error(`wrote ${path}`);
}

const progressLine = new Progress();

/**
 * Progress on stderr: redrawn in place on a terminal, a line now and then otherwise (so a log
 * stays short); '' clears the line before results are printed.
 */
export function progress(message: string): void {
  if (message === '') progressLine.done();
  else progressLine.update(message);
}

/** Deterministic pseudo-random floats in [-1, 1) (xorshift32), fast enough for GBs of rows. */
export function randomFloats(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) / 2147483648 - 1;
  }
  return out;
}
