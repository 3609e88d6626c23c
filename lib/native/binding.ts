// The whole native surface in one place: the types of what the .node exports, and the
// loader. No other file names native symbols.
import * as path from 'node:path';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';

import { KVCacheError } from '../errors';

export interface NativeCacheOptions {
  layers: number;
  kvHeads: number;
  headDim: number;
  queryHeads: number;
  blockSize: number;
  keys: string;
  values: string;
  groupSize: number;
  rotateKeys: boolean;
  rotateValues: boolean;
  rotationSeed: number;
  maxBytes: number; // 0 = no budget
  threads: number;
  queryReservoir: number;
  recentQueries: number;
  device: string;
}

export interface NativeStats {
  sequences: number;
  rows: number;
  blocksUsed: number;
  blocksFree: number;
  blockBytes: number;
  committedBytes: number;
  workspaceBytes: number;
  maxBytes: number;
}

export interface NativeRows {
  keys: Float32Array;
  values: Float32Array;
  beta: Float32Array;
  positions: Int32Array;
}

export interface NativeSequence {
  append(layer: number, keys: Float32Array | Uint16Array, values: Float32Array | Uint16Array, positions: Int32Array | null): void;
  /** flags: 1 = accumulateScores, 2 = recordQueries */
  attention(layer: number, queries: Float32Array, tq: number, out: Float32Array, lse: Float32Array | null, flags: number): void;
  resetScores(): void;
  length(layer: number, kvHead: number): number;
  lengths(layer: number): Int32Array;
  nextPosition(layer: number): number;
  fork(): NativeSequence;
  truncate(position: number): void;
  free(): void;
  isFreed(): boolean;
  read(layer: number, kvHead: number): NativeRows;
  export(): Uint8Array;
}

export interface NativeCache {
  createSequence(): NativeSequence;
  importSequence(bytes: Uint8Array): NativeSequence;
  attentionBatch(layer: number, sequences: NativeSequence[], queries: Float32Array, out: Float32Array, lse: Float32Array | null, flags: number): void;
  stats(): NativeStats;
  trimWorkspace(): void;
  dispose(): void;
}

export interface NativeDevices {
  cpu: { available: true; threads: number; simd: string };
  cuda: {
    available: boolean;
    compiled: boolean;
    reason?: string;
    name?: string;
    devices?: number;
    totalMemory?: number;
    computeCapability?: number;
    runtimeVersion?: number;
    driverVersion?: number;
  };
}

/** Eviction request as the native side reads it (built by lib/eviction-policy.ts). */
export interface NativePolicySpec {
  /** 0 recency, 1 accumulated mass, 2 observation window, 3 last query, 4 key norm, 5 random, 6 given */
  source: number;
  sinks: number;
  recent: number;
  window: number;
  pool: number;
  seed: number;
  /** source 6: every stream's scores concatenated, layer-major */
  given: Float32Array | null;
}

export interface NativeBudgetSpec {
  /** 0 keep, 1 ratio, 2 per-layer ratios */
  kind: number;
  keep: number;
  ratio: number;
  layerRatios: Float64Array | null;
  adaptive: boolean;
  safeguard: number;
  pyramid: boolean;
  slope: number;
}

export interface NativeEvictionReport {
  rowsBefore: number;
  rowsAfter: number;
  keptPerStream: Int32Array;
  blocksFreed: number;
  bytesFreed: number;
  nativeMilliseconds: number;
}

export interface NativeRecordedQueries {
  reservoir: Float32Array;
  recent: Float32Array;
  seen: number;
  recentSeen: number;
}

/** Compaction request as the native side reads it (built by lib/compactor.ts). */
export interface NativeCompactionSpec {
  /** 0 highest-attention, 1 omp */
  method: number;
  /** > 0: rows kept = ceil(ratio × rows); else targetTokens */
  ratio: number;
  targetTokens: number;
  sinks: number;
  recent: number;
  chunkSize: number;
  ridge: number;
  nnlsIterations: number;
  threads: number;
  layers: Int32Array | null;
  heads: Int32Array | null;
  /** 0 recorded (keys when none), 1 keys, 2 given */
  querySource: number;
  /** per layer [n, queryHeads, headDim] or null */
  queries: Array<Float32Array | null> | null;
  heldOut: Array<Float32Array | null> | null;
  online: boolean;
  maxRows: number;
}

export interface NativeStreamCompaction {
  layer: number;
  kvHead: number;
  rowsBefore: number;
  rowsAfter: number;
  target: number;
  queries: number;
  querySource: 'recorded' | 'keys' | 'given';
  outputError: number;
  massError: number;
  /** NaN without held-out queries */
  heldOutOutputError: number;
  heldOutMassError: number;
  ridgeRaises: number;
  secondsScores: number;
  secondsSelect: number;
  secondsNnls: number;
  secondsValues: number;
  secondsDiagnostics: number;
}

export interface NativeCompactionReport {
  streams: NativeStreamCompaction[];
  rowsBefore: number;
  rowsAfter: number;
  blockBytes: number;
  blocksBefore: number;
  blocksAfter: number;
  blocksFreed: number;
  bytesFreed: number;
  secondsRead: number;
  secondsApply: number;
  secondsTotal: number;
}

export interface NativeAddon {
  NativeCache: new (options: NativeCacheOptions) => NativeCache;
  setErrorFactory(factory: (code: string, message: string) => Error): void;
  devices(): NativeDevices;
  evict(sequence: NativeSequence, policy: NativePolicySpec, budget: NativeBudgetSpec): NativeEvictionReport;
  policyScores(sequence: NativeSequence, policy: NativePolicySpec, layer: number, kvHead: number): Float32Array;
  /** Accumulated attention mass of one stream, or null when attention never accumulated it. */
  streamScores(sequence: NativeSequence, layer: number, kvHead: number): Float32Array | null;
  recordedQueries(sequence: NativeSequence, layer: number, kvHead: number): NativeRecordedQueries;
  streamPositions(sequence: NativeSequence, layer: number, kvHead: number): Int32Array;
  /** Attention Matching compaction off the event loop; the sequence is busy until it settles. */
  compact(sequence: NativeSequence, spec: NativeCompactionSpec, onProgress: ((fraction: number) => void) | null): Promise<NativeCompactionReport>;
  compactSync(sequence: NativeSequence, spec: NativeCompactionSpec): NativeCompactionReport;
  /** Benchmarks: one read pass over the buffer with `threads` threads (returns a checksum). */
  readPass(buffer: ArrayBufferView, threads: number): number;
  fmaProbe(iterations: number): { multiplyAdds: number; lanes: number; checksum: number };
  blockLayout(keys: string, values: string, headDim: number, groupSize: number, blockSize: number): {
    keyRowBytes: number;
    valueRowBytes: number;
    blockBytes: number;
  };
}

/** The package root (holds package.json), from lib/native or dist/cjs/native. */
function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, 'package.json');
    if (fs.existsSync(candidate)) {
      try {
        if ((JSON.parse(fs.readFileSync(candidate, 'utf8')) as { name?: string }).name === 'kvcompact') return dir;
      } catch {
        // not ours; keep walking up
      }
    }
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '..', '..');
}

let addon: NativeAddon | undefined;

/**
 * Loads the addon once: KVCOMPACT_NATIVE (an explicit .node path), else node-gyp-build's
 * search (build/Release, then prebuilds/). Every failure is collected into one message
 * that says what to do.
 */
export function native(): NativeAddon {
  if (addon) return addon;
  const root = packageRoot();
  // createRequire works the same in the CommonJS build and under ESM-based test runners.
  const load = createRequire(__filename);
  const failures: string[] = [];
  const explicit = process.env['KVCOMPACT_NATIVE'];
  const attempts: Array<[string, () => unknown]> = [];
  if (explicit) attempts.push([explicit, () => load(path.resolve(explicit))]);
  attempts.push([`node-gyp-build(${root})`, () => (load('node-gyp-build') as (dir: string) => unknown)(root)]);
  for (const [where, attempt] of attempts) {
    try {
      const loaded = attempt() as NativeAddon;
      loaded.setErrorFactory((code, message) => new KVCacheError(code as KVCacheError['code'], message));
      addon = loaded;
      return loaded;
    } catch (error) {
      failures.push(`  ${where}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  throw new KVCacheError(
    'INTERNAL',
    `the kvcompact native addon could not be loaded for ${process.platform}-${process.arch}, Node ${process.version}:\n` +
      failures.join('\n') +
      '\nBuild it with `npm run build:native` (CMake) or `npx node-gyp rebuild`, or reinstall the package.',
  );
}
