// Shared helpers of the benchmarks: argument parsing, the read-bandwidth floor, cold
// working sets, medians and markdown tables.
import { writeFileSync } from 'node:fs';

import { Bench } from 'tinybench';

import { native } from '../../lib/native/binding';

export interface BenchArgs {
  json?: string;
  quick: boolean;
  rest: Map<string, string>;
}

export function parseArgs(argv = process.argv.slice(2)): BenchArgs {
  const rest = new Map<string, string>();
  let json: string | undefined;
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') json = argv[++i];
    else if (a === '--quick') quick = true;
    else if (a.startsWith('--')) rest.set(a.slice(2), argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--') ? argv[++i]! : 'true');
  }
  return { json, quick, rest };
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
 * Read bandwidth (bytes/s) of one native streaming pass over a buffer of `bytes`
 * (≥ 1 GiB so that no cache level holds it), with `threads` threads; median of runs.
 */
export function readBandwidth(bytes: number, threads: number, runs = 7): number {
  const buffer = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4096) buffer[i] = i & 0xff; // commit every page
  const addon = native();
  addon.readPass(buffer, threads); // warm
  return bytes / medianSeconds(() => addon.readPass(buffer, threads), runs);
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

export function progress(message: string): void {
  process.stderr.write(`\r\x1b[K${message}`);
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
