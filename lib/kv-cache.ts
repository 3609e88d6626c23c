// KVCache: the public entry point. Resolves and checks options, owns the native cache,
// creates sequences and runs batched decode attention.
import * as os from 'node:os';

import { KVCacheError, invalidArgument, shapeMismatch } from './errors';
import { native, type NativeCache } from './native/binding';
import { Sequence } from './sequence';
import type { AttentionOptions, CacheStats, Devices, KVCacheConfig, KVCacheOptions, Storage } from './types';
import { lseArray, outputArray, attentionFlags } from './attention-options';
import { float32Array, indexBelow, integerIn, knownKeys, optionsObject } from './validate';

const STORAGES: readonly Storage[] = ['f32', 'f16', 'bf16', 'int8', 'int4'];
const OPTION_NAMES = [
  'layers', 'kvHeads', 'headDim', 'queryHeads', 'blockSize', 'keys', 'values', 'groupSize',
  'rotate', 'rotationSeed', 'maxBytes', 'device', 'threads', 'queryReservoir', 'recentQueries',
] as const;

function storage(name: string, value: unknown): Storage {
  if (value === undefined) return 'f16';
  if (typeof value === 'string' && (STORAGES as readonly string[]).includes(value)) return value as Storage;
  throw invalidArgument(name, `one of ${STORAGES.map((s) => `'${s}'`).join(', ')}`, value);
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Checks options and fills in defaults (no native code involved). */
export function resolveOptions(input: KVCacheOptions): KVCacheConfig {
  const o = optionsObject('options', input);
  knownKeys('options', o, OPTION_NAMES);
  const layers = integerIn('options.layers', o['layers'], 1, 4096);
  const kvHeads = integerIn('options.kvHeads', o['kvHeads'], 1, 1024);
  const headDim = integerIn('options.headDim', o['headDim'], 2, 1024);
  if (headDim % 2 !== 0) throw invalidArgument('options.headDim', 'an even integer', headDim);
  const queryHeads = o['queryHeads'] === undefined ? kvHeads : integerIn('options.queryHeads', o['queryHeads'], 1, 65536);
  if (queryHeads % kvHeads !== 0) throw invalidArgument('options.queryHeads', `a multiple of kvHeads (${kvHeads})`, queryHeads);
  const blockSize = o['blockSize'] === undefined ? 32 : integerIn('options.blockSize', o['blockSize'], 1, 4096);
  const keys = storage('options.keys', o['keys']);
  const values = storage('options.values', o['values']);
  const groupSize = o['groupSize'] === undefined ? Math.min(32, headDim) : integerIn('options.groupSize', o['groupSize'], 2, headDim);
  if (headDim % groupSize !== 0 || groupSize % 2 !== 0) {
    throw invalidArgument('options.groupSize', `an even divisor of headDim (${headDim})`, groupSize);
  }
  let rotateKeys = false;
  let rotateValues = false;
  const rotate = o['rotate'];
  if (typeof rotate === 'boolean') {
    rotateKeys = rotate;
  } else if (rotate !== undefined) {
    const r = optionsObject('options.rotate', rotate);
    knownKeys('options.rotate', r, ['keys', 'values']);
    if (r['keys'] !== undefined && typeof r['keys'] !== 'boolean') throw invalidArgument('options.rotate.keys', 'a boolean', r['keys']);
    if (r['values'] !== undefined && typeof r['values'] !== 'boolean') throw invalidArgument('options.rotate.values', 'a boolean', r['values']);
    rotateKeys = r['keys'] === true;
    rotateValues = r['values'] === true;
  }
  if ((rotateKeys || rotateValues) && !isPowerOfTwo(headDim)) {
    throw invalidArgument('options.rotate', `false for a headDim that is not a power of two (${headDim})`, rotate);
  }
  const rotationSeed = o['rotationSeed'] === undefined ? 0x6b766321 : integerIn('options.rotationSeed', o['rotationSeed'], 0, 0xffffffff);
  let maxBytes = 0;
  if (o['maxBytes'] !== undefined && o['maxBytes'] !== Infinity) {
    maxBytes = integerIn('options.maxBytes', o['maxBytes'], 1, Number.MAX_SAFE_INTEGER);
  }
  const device = o['device'] === undefined ? 'cpu' : o['device'];
  if (device !== 'cpu' && device !== 'cuda') throw invalidArgument('options.device', "'cpu' or 'cuda'", device);
  const threads = o['threads'] === undefined ? os.availableParallelism() : integerIn('options.threads', o['threads'], 1, 256);
  const queryReservoir = o['queryReservoir'] === undefined ? 512 : integerIn('options.queryReservoir', o['queryReservoir'], 0, 1 << 20);
  const recentQueries = o['recentQueries'] === undefined ? 64 : integerIn('options.recentQueries', o['recentQueries'], 0, 1 << 16);
  return {
    layers, kvHeads, headDim, queryHeads, blockSize, keys, values, groupSize, rotateKeys, rotateValues,
    rotationSeed, maxBytes, device, threads, queryReservoir, recentQueries,
  };
}

export class KVCache {
  /** The options this cache runs with, defaults filled in. */
  readonly config: KVCacheConfig;
  /** @internal */
  readonly native: NativeCache;
  #disposed = false;

  constructor(options: KVCacheOptions) {
    this.config = Object.freeze(resolveOptions(options));
    const addon = native();
    if (this.config.device === 'cuda') {
      const cuda = addon.devices().cuda;
      if (!cuda.available) throw new KVCacheError('CUDA_UNAVAILABLE', `cuda unavailable: ${cuda.reason ?? 'unknown reason'}`);
    }
    this.native = new addon.NativeCache({ ...this.config, maxBytes: this.config.maxBytes });
  }

  /** Devices this build can use, and why CUDA cannot be used when it cannot. */
  static devices(): Devices {
    return native().devices();
  }

  /** KV bytes per token (all layers and kv heads, block overhead included) for planning `maxBytes`. */
  static bytesPerToken(options: KVCacheOptions): number {
    const c = resolveOptions(options);
    const layout = native().blockLayout(c.keys, c.values, c.headDim, c.groupSize, c.blockSize);
    return (c.layers * c.kvHeads * layout.blockBytes) / c.blockSize;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** @internal */
  checkAlive(): void {
    if (this.#disposed) throw new KVCacheError('DISPOSED', 'the cache has been disposed');
  }

  createSequence(): Sequence {
    this.checkAlive();
    return new Sequence(this, this.native.createSequence());
  }

  /** Starts a sequence from bytes made by `Sequence.export()` (with the same formats). */
  importSequence(bytes: Uint8Array): Sequence {
    this.checkAlive();
    if (!(bytes instanceof Uint8Array)) throw invalidArgument('bytes', 'a Uint8Array', bytes);
    return new Sequence(this, this.native.importSequence(bytes));
  }

  /**
   * One decode step (one query token) for many sequences.
   * queries: [sequences.length, queryHeads, headDim] -> output of the same shape.
   */
  attentionBatch(layer: number, sequences: readonly Sequence[], queries: Float32Array, options?: AttentionOptions): Float32Array {
    this.checkAlive();
    const c = this.config;
    indexBelow('layer', layer, c.layers);
    if (!Array.isArray(sequences) || sequences.length === 0) throw invalidArgument('sequences', 'a non-empty array of Sequence', sequences);
    const natives = sequences.map((s, i) => {
      if (!(s instanceof Sequence)) throw invalidArgument(`sequences[${i}]`, 'a Sequence', s);
      if (s.cache !== this) throw invalidArgument(`sequences[${i}]`, 'a Sequence of this cache', 'a sequence of another cache');
      s.checkAlive();
      return s.native;
    });
    float32Array('queries', queries);
    const expected = sequences.length * c.queryHeads * c.headDim;
    if (queries.length !== expected) {
      throw shapeMismatch(`queries must hold sequences × queryHeads × headDim = ${expected} elements, got ${queries.length}`);
    }
    const o = optionsObject('options', options);
    const flags = attentionFlags(o);
    const out = outputArray(o['out'], expected);
    const lse = lseArray(o['lse'], sequences.length * c.queryHeads);
    this.native.attentionBatch(layer, natives, queries, out, lse, flags);
    return out;
  }

  stats(): CacheStats {
    this.checkAlive();
    const s = this.native.stats();
    const tokens = s.rows / (this.config.layers * this.config.kvHeads);
    const bytesUsed = s.blocksUsed * s.blockBytes;
    return {
      sequences: s.sequences,
      rows: s.rows,
      tokens,
      blocksUsed: s.blocksUsed,
      blocksFree: s.blocksFree,
      blockBytes: s.blockBytes,
      bytesUsed,
      bytesPerToken: tokens > 0 ? bytesUsed / tokens : 0,
      committedBytes: s.committedBytes,
      maxBytes: s.maxBytes,
      workspaceBytes: s.workspaceBytes,
    };
  }

  /**
   * Frees the scratch memory the cache keeps between compactions (`stats().workspaceBytes`)
   * that no running compaction uses. The next compaction allocates it again.
   */
  trimWorkspace(): void {
    this.checkAlive();
    this.native.trimWorkspace();
  }

  /** Frees all memory at once; every later call on the cache or its sequences throws DISPOSED. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.native.dispose();
  }
}
