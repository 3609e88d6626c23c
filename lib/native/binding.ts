// The whole native surface in one place: the types of what the .node exports, and the
// loader. No other file names native symbols.
import * as path from 'node:path';
import { createRequire } from 'node:module';

import { KVCacheError } from '../errors';
import { type Attempt, describeHost, loadFailureMessage, loadFirst, packageRoot, productionCandidates } from './locate';
import type {
  BudgetKindName, CompactionMethodName, DeviceName, PerHeadName, QuerySourceName, RopeStyleName, ScheduleName, ScoreSourceName, StorageName,
} from '../generated/schema';
import type { Devices } from '../types';

// Enums cross the boundary as their names (schema/options.json), flags as the bits listed
// there; the native side checks both against the same generated tables and rejects unknown
// names and unknown bits.

export interface NativeCacheOptions {
  layers: number;
  kvHeads: number;
  headDim: number;
  queryHeads: number;
  blockSize: number;
  keys: StorageName;
  values: StorageName;
  groupSize: number;
  rotateKeys: boolean;
  rotateValues: boolean;
  rotationSeed: number;
  maxBytes: number; // 0 = no budget
  threads: number;
  queryReservoir: number;
  recentQueries: number;
  device: DeviceName;
  /** null: keys after RoPE */
  rope: { theta: number; dims: number; style: RopeStyleName } | null;
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
  lowRankBytes: number;
  tiers?: { blocks: number; rows: number; rowsPerBlock: number }[];
}

export interface NativeRows {
  keys: Float32Array;
  values: Float32Array;
  beta: Float32Array;
  positions: Int32Array;
}

/** The resolved `sparse` attention option (schema section sparse). */
export interface NativeSparse {
  tokens: number;
  sinks: number;
  recent: number;
}

export interface NativeSequence {
  append(layer: number, keys: Float32Array | Uint16Array, values: Float32Array | Uint16Array, positions: Int32Array | null): void;
  /** flags: ATTENTION_FLAGS bits (1 = accumulateScores, 2 = recordQueries); other bits are rejected */
  attention(layer: number, queries: Float32Array, tq: number, out: Float32Array, lse: Float32Array | null, flags: number,
    sparse?: NativeSparse | null): void;
  sparseSelection(layer: number, queries: Float32Array, tq: number, sparse: NativeSparse): Array<{ blocks: Int32Array; bounds: Float32Array }>;
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
  fitBases(): void;
  setBases(layer: number, kvHead: number, keys: Float32Array, values: Float32Array): void;
  bases(layer: number, kvHead: number): { keys: Float32Array; values: Float32Array } | null;
}

/** An incremental import in progress (opaque; cpp/binding/chunk_import_binding.cpp). */
export type NativeChunkImport = { readonly __brand: 'NativeChunkImport' };

export interface NativeCache {
  createSequence(): NativeSequence;
  importSequence(bytes: Uint8Array): NativeSequence;
  beginChunkImport(prelude: Uint8Array, rows: Uint32Array): NativeChunkImport;
  chunkImportAdd(handle: NativeChunkImport, chunk: number, frame: Uint8Array, payloadAt: number): void;
  chunkImportFinish(handle: NativeChunkImport): NativeSequence;
  chunkImportAbort(handle: NativeChunkImport): void;
  attentionBatch(layer: number, sequences: NativeSequence[], queries: Float32Array, out: Float32Array, lse: Float32Array | null, flags: number,
    sparse?: NativeSparse | null): void;
  stats(): NativeStats;
  trimWorkspace(): void;
  dispose(): void;
}

/** What the native devices() returns: exactly the public `Devices` (lib/types.ts documents it). */
export type NativeDevices = Devices;

/** Eviction request as the native side reads it (built by lib/eviction-policy.ts). */
export interface NativePolicySpec {
  source: ScoreSourceName;
  sinks: number;
  recent: number;
  window: number;
  pool: number;
  seed: number;
  /** observation / lastQuery on a cache with rope: rotate rows and queries at their ranks */
  rankPositions: boolean;
  /** source 'given': every stream's scores concatenated, layer-major */
  given: Float32Array | null;
}

export interface NativeBudgetSpec {
  kind: BudgetKindName;
  keep: number;
  ratio: number;
  layerRatios: Float64Array | null;
  perHead: PerHeadName;
  safeguard: number;
  schedule: ScheduleName;
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
  /** Caches with rope: the stored position of each reservoir vector's query token. */
  reservoirPositions?: Int32Array;
}

/** Compaction request as the native side reads it (built by lib/compactor.ts). */
export interface NativeCompactionSpec {
  method: CompactionMethodName;
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
  /** 'recorded' (keys when none), 'keys' or 'given' */
  querySource: QuerySourceName;
  /** per layer [n, queryHeads, headDim] or null */
  queries: Array<Float32Array | null> | null;
  heldOut: Array<Float32Array | null> | null;
  /** caches with rope: per layer the position of each token of queries / heldOut, or null (the layer's next position) */
  queryPositions?: Array<Int32Array | null> | null;
  heldOutPositions?: Array<Int32Array | null> | null;
  online: boolean;
  maxRows: number;
  /** compact() only: compute on a thread of its own at the lowest priority (lib/maintain.ts). */
  background?: boolean;
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

/** How the .node was built (cpp/binding/build_info.cpp). */
export interface NativeBuildInfo {
  /** 'cmake' (primary build, prebuilds) or 'node-gyp' (the CPU-only fallback) */
  buildSystem: string;
  compiler: string;
  napiVersion: number;
  cudaCompiled: boolean;
  /** CMake CUDA architectures, comma-separated ('' without CUDA) */
  cudaArchitectures: string;
  cudaEmulationCompiled: boolean;
  /** libstdc++ and libgcc linked in (the .node needs only the C library) */
  staticCxxRuntime: boolean;
  assertions: boolean;
}

export interface NativeAddon {
  buildInfo(): NativeBuildInfo;
  NativeCache: new (options: NativeCacheOptions) => NativeCache;
  setErrorFactory(factory: (code: string, message: string) => Error): void;
  devices(): NativeDevices;
  evict(sequence: NativeSequence, policy: NativePolicySpec, budget: NativeBudgetSpec): NativeEvictionReport;
  policyScores(sequence: NativeSequence, policy: NativePolicySpec, layer: number, kvHead: number): Float32Array;
  /** Accumulated attention mass of one stream, or null when attention never accumulated it. */
  streamScores(sequence: NativeSequence, layer: number, kvHead: number): Float32Array | null;
  recordedQueries(sequence: NativeSequence, layer: number, kvHead: number): NativeRecordedQueries;
  streamPositions(sequence: NativeSequence, layer: number, kvHead: number): Int32Array;
  /**
   * Attention Matching compaction off the event loop; the sequence is busy until it settles.
   * abort() makes it stop at the next batch of streams (or before applying): the promise then
   * rejects with ABORTED and the sequence is unchanged.
   */
  compact(
    sequence: NativeSequence,
    spec: NativeCompactionSpec,
    onProgress: ((fraction: number) => void) | null,
  ): { promise: Promise<NativeCompactionReport>; abort: () => void };
  compactSync(sequence: NativeSequence, spec: NativeCompactionSpec): NativeCompactionReport;
  /** Background maintenance (cpp/core/replace_prefix.cpp): a copy-on-write fork that remembers every stream's length. */
  snapshot(sequence: NativeSequence): NativeSequence;
  /** Replaces the rows the snapshot was taken of by the snapshot's rows, keeping the rows appended since (ABORTED: changed below the snapshot). */
  replacePrefix(sequence: NativeSequence, snapshot: NativeSequence): void;
  /** Block-table entries and rows over every stream of a sequence, and the shortest and longest stream's rows. */
  sequenceUsage(sequence: NativeSequence): { blocks: number; rows: number; minRows: number; maxRows: number; calibrating: number };
  /**
   * CRC-32 of the export format (zlib's) of `bytes`, continuing from `crc` (0 to start), by the
   * implementation the process chose or the one named (tests; UNSUPPORTED where unavailable).
   */
  crc32(bytes: Uint8Array, crc: number, implementation?: 'table' | 'pclmul' | 'vpclmul'): number;
  /** Which implementation crc32 uses: 'vpclmul', 'pclmul' or 'table'. */
  crc32Implementation(): string;
  /**
   * Copies the pieces (triples [source index, offset, length]) one after another into `out`
   * from offset 0 and returns the CRC-32 of the bytes written.
   */
  gatherCrc32(sources: readonly Uint8Array[], pieces: Float64Array, out: Uint8Array): number;
  /** Benchmarks: one read pass over the buffer with `threads` threads (returns a checksum). */
  readPass(buffer: ArrayBufferView, threads: number): number;
  /** Median read rate (bytes/s) over `mebibytes` mapped like the block pool (huge pages where offered). */
  readFloor(mebibytes: number, threads: number, runs: number): number;
  fmaProbe(iterations: number): { multiplyAdds: number; lanes: number; checksum: number };
  blockLayout(keys: string, values: string, headDim: number, groupSize: number, blockSize: number, keySummaries?: boolean, valueDim?: number): {
    keyRowBytes: number;
    valueRowBytes: number;
    blockBytes: number;
  };
  /**
   * Benchmarks (npm run gpu-check): median time of `repeats` device-to-device cudaMemcpy of
   * `bytes` on device 0, timed with cudaEvents. Throws CUDA_UNAVAILABLE without a GPU.
   */
  cudaCopyBandwidth(bytes: number, repeats: number): NativeCopyBandwidth;
}

export interface NativeCopyBandwidth {
  bytes: number;
  repeats: number;
  milliseconds: number;
  /** bytes / median time */
  copyGBps: number;
  /** 2 × bytes / median time: DRAM traffic, every byte is read once and written once */
  memoryGBps: number;
}

/** Host <-> device copies made by emulated CUDA backends since the last reset. */
export interface NativeTransferStats {
  hostToDeviceBytes: number;
  hostToDeviceCalls: number;
  deviceToHostBytes: number;
  deviceToHostCalls: number;
}

/** The test addon: the production surface plus functions that exist only in the test build. */
export interface NativeTestAddon extends NativeAddon {
  cudaTransferStats(): NativeTransferStats;
  resetCudaTransferStats(): void;
}

/**
 * Which addon a process uses. 'production' is kvcompact.node as node-gyp-build finds it
 * (build/Release, then prebuilds/): CPU backend + CUDA backend, no emulator. 'test' is
 * build/Release/test/kvcompact_test.node, built by CMake only: the same addon plus the CUDA
 * emulator (device 'cuda' on the CPU with KVCOMPACT_CUDA_EMULATION=1) and test-only functions.
 * A path loads that .node file.
 */
export type NativeBuild = 'production' | 'test' | { path: string };

/** The test addon's path (a subdirectory: node-gyp-build loads the first .node in build/Release). */
export function testAddonPath(): string {
  return path.join(packageRoot(), 'build', 'Release', 'test', 'kvcompact_test.node');
}

/** The one loader rule: KVCOMPACT_NATIVE=test selects the test addon, any other value is a path to a .node, unset is production. */
export function requestedBuild(): NativeBuild {
  const explicit = process.env['KVCOMPACT_NATIVE'];
  if (!explicit) return 'production';
  if (explicit === 'test') return 'test';
  return { path: path.resolve(explicit) };
}

function buildKey(build: NativeBuild): string {
  return typeof build === 'string' ? build : build.path;
}

const loaded = new Map<string, { addon: NativeAddon; file: string }>();
let addon: NativeAddon | undefined;

/**
 * Loads one build (once per process) and registers the error factory on it. 'production'
 * tries build/Release/kvcompact.node, then the prebuilds for this platform (locate.ts); when
 * nothing loads, one error lists every file with its reason and the commands that fix it.
 */
export function loadNative(build: NativeBuild): NativeAddon {
  return loadNativeWithFile(build).addon;
}

/** loadNative(), plus the file the addon came from (`npx kvcompact doctor` prints it). */
export function loadNativeWithFile(build: NativeBuild): { addon: NativeAddon; file: string } {
  const key = buildKey(build);
  const cached = loaded.get(key);
  if (cached) return cached;
  const root = packageRoot();
  // createRequire works the same in the CommonJS build and under ESM-based test runners.
  const load = createRequire(__filename);
  const attempts: Attempt[] =
    build === 'production'
      ? productionCandidates(root)
      : [{ file: build === 'test' ? testAddonPath() : build.path, origin: 'environment' }];
  const result = loadFirst(attempts, (file) => load(file) as NativeAddon);
  if (!result.ok) {
    const what = build === 'production' ? 'production build' : build === 'test' ? 'KVCOMPACT_NATIVE=test' : `KVCOMPACT_NATIVE=${build.path}`;
    const extra =
      build === 'test'
        ? '\nThe test addon is built by CMake only: `npm run build:native` in a checkout of the repository (it needs the CUDA toolkit headers for the emulator).'
        : build === 'production'
          ? ''
          : '\nKVCOMPACT_NATIVE is set: point it at a kvcompact.node that loads, or unset it to use the package\'s own binary.';
    throw new KVCacheError('INTERNAL', loadFailureMessage(what, result.attempts, root, describeHost()) + extra);
  }
  result.addon.setErrorFactory((code, message) => new KVCacheError(code as KVCacheError['code'], message));
  const entry = { addon: result.addon, file: result.file };
  loaded.set(key, entry);
  return entry;
}

/**
 * Loads the build this process asks for (KVCOMPACT_NATIVE at this moment) when kvcompact is
 * imported, so that a missing or unloadable binary fails at import with the full report. The
 * build that native() uses is still decided at its first call.
 */
export function loadAtImport(): void {
  loadNative(requestedBuild());
}

/** The addon this process uses (requestedBuild(), decided at the first call). */
export function native(): NativeAddon {
  if (!addon) addon = loadNative(requestedBuild());
  return addon;
}

/** The test addon's extra surface; throws unless this process uses the test build. */
export function nativeTest(): NativeTestAddon {
  const a = native() as Partial<NativeTestAddon>;
  if (typeof a.cudaTransferStats !== 'function' || typeof a.resetCudaTransferStats !== 'function') {
    throw new KVCacheError(
      'INVALID_ARGUMENT',
      'test-only native functions need the test addon: set KVCOMPACT_NATIVE=test before the addon is first used',
    );
  }
  return a as NativeTestAddon;
}
