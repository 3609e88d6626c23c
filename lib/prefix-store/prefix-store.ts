// PrefixStore: keeps exported sequences under the token prefixes they represent, so that a
// later request (in this process, another process or on another machine) starts from the
// stored cache instead of prefilling again. Sits above the cache (ARCHITECTURE §9): it only
// calls Sequence.export() and KVCache.importSequence() and hands backends verified bytes
// under content-hash keys. Store failures become misses unless `throwOnError` is set; only
// misuse (bad arguments, a disposed cache, a full cache) throws.
import { KVCacheError, invalidArgument } from '../errors';
import { KVCache, resolveOptions } from '../kv-cache';
import { Sequence } from '../sequence';
import type { KVCacheConfig, Storage } from '../types';
import type { StoreBackend } from './backend';
import { DirectoryBackend } from './directory-backend';
import { encodeEntry, type EntryKind } from './entry';
import { chunkPayload, isPlainPrefix, readExportLayout } from './export-layout';
import { chainHashes, chunkKey, fingerprint, markerKey, prefixKey } from './keys';
import { MemoryBackend } from './memory-backend';
import { findPrefix, type Plan } from './plan';
import { EntryReceiver, type Received } from './receive';
import { RedisBackend } from './redis-backend';
import { Scratch } from './scratch';
import type {
  DirectoryStoreOptions, LoadedPrefix, MemoryStoreOptions, PrefixKind, PrefixMatch, PrefixStoreOptions, PrefixStoreStats, PutResult, RedisStoreOptions,
} from './types';

const DEFAULT_TIMEOUT_MS = 250;
/** Data transfers get timeoutMs plus their size at this rate: a slow disk or link is not a dead one. */
const DEFAULT_MIN_BYTES_PER_SECOND = 25e6;

/** Kept load buffers go back to the system after this long without a load. */
const SCRATCH_IDLE_MS = 10_000;

class Timeout extends Error {}

function positiveInteger(name: string, value: unknown, fallback: number, max = 2 ** 31 - 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) throw invalidArgument(name, `an integer in [1, ${max}]`, value);
  return value;
}

/** Token ids as a Uint32Array (a copy unless already one). */
function tokenIds(tokens: unknown): Uint32Array {
  if (tokens instanceof Uint32Array) return tokens;
  if (!(Array.isArray(tokens) || tokens instanceof Int32Array)) throw invalidArgument('tokens', 'an array, Int32Array or Uint32Array of token ids', tokens);
  const out = new Uint32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > 0xffffffff) throw invalidArgument(`tokens[${i}]`, 'an integer in [0, 2^32)', t);
    out[i] = t;
  }
  return out;
}

/** Export bytes per token of a cache configuration (rows of every stream, beta and position). */
function exportBytesPerToken(c: KVCacheConfig): number {
  const row = (s: Storage) => {
    const groups = c.headDim / c.groupSize;
    const raw = { f32: 4 * c.headDim, f16: 2 * c.headDim, bf16: 2 * c.headDim, int8: c.headDim + 2 * groups, int4: c.headDim / 2 + 4 * groups }[s];
    return Math.ceil(raw / 4) * 4;
  };
  return c.layers * c.kvHeads * (row(c.keys) + row(c.values) + 8);
}

/**
 * Exported sequences kept under the token prefixes they represent (README, "Prefix store"):
 * PrefixStore.memory(), .directory(path) or .redis({ url }).
 */
export class PrefixStore {
  readonly #backend: StoreBackend;
  readonly #model: string;
  readonly #chunk: number;
  readonly #timeoutMs: number;
  readonly #minRate: number;
  readonly #throw: boolean;
  readonly #onError: ((e: Error) => void) | undefined;
  readonly #prefer: PrefixKind;
  readonly #defaultConfig: KVCacheConfig | undefined;
  #closed = false;
  /** Buffers of the last load kept for the next (entries as read, and the joined export). */
  readonly #received = new Scratch(SCRATCH_IDLE_MS);
  readonly #joined = new Scratch(SCRATCH_IDLE_MS);
  readonly #counters = { matches: 0, hits: 0, misses: 0, puts: 0, loads: 0, bytesWritten: 0, bytesRead: 0, corrupt: 0, timeouts: 0, errors: 0 };

  private constructor(backend: StoreBackend, options: PrefixStoreOptions) {
    this.#backend = backend;
    if (options.model !== undefined && typeof options.model !== 'string') throw invalidArgument('options.model', 'a string', options.model);
    this.#model = options.model ?? 'default';
    this.#chunk = positiveInteger('options.chunkTokens', options.chunkTokens, 256, 1 << 20);
    this.#timeoutMs = positiveInteger('options.timeoutMs', options.timeoutMs, DEFAULT_TIMEOUT_MS, 3_600_000);
    this.#minRate = positiveInteger('options.minBytesPerSecond', options.minBytesPerSecond, DEFAULT_MIN_BYTES_PER_SECOND, Number.MAX_SAFE_INTEGER);
    this.#throw = options.throwOnError === true;
    this.#onError = options.onError;
    if (options.prefer !== undefined && options.prefer !== 'plain' && options.prefer !== 'compacted') throw invalidArgument('options.prefer', "'plain' or 'compacted'", options.prefer);
    this.#prefer = options.prefer ?? 'compacted';
    this.#defaultConfig = options.cache === undefined ? undefined : resolveOptions(options.cache);
  }

  /** An in-process store: least recently used entries go when `maxBytes` (default 1 GiB) is reached. */
  static memory(options: MemoryStoreOptions = {}): PrefixStore {
    return new PrefixStore(new MemoryBackend(positiveInteger('options.maxBytes', options.maxBytes, 2 ** 30, Number.MAX_SAFE_INTEGER)), options);
  }

  /**
   * A store in a directory, shared by the processes of one machine (created if missing), with
   * an optional byte budget (least recently used entries go first) and time to live.
   */
  static directory(dir: string, options: DirectoryStoreOptions = {}): PrefixStore {
    if (typeof dir !== 'string' || dir === '') throw invalidArgument('dir', 'a directory path', dir);
    const maxBytes = options.maxBytes === undefined ? Infinity : positiveInteger('options.maxBytes', options.maxBytes, 0, Number.MAX_SAFE_INTEGER);
    const ttlSeconds = options.ttlSeconds === 0 ? 0 : positiveInteger('options.ttlSeconds', options.ttlSeconds, 0, 2 ** 31 - 1);
    return new PrefixStore(new DirectoryBackend(dir, { maxBytes, ttlSeconds }), options);
  }

  /** A store in Redis, shared across processes and machines. Connects in the background. */
  static redis(options: RedisStoreOptions = {}): PrefixStore {
    const timeoutMs = positiveInteger('options.timeoutMs', options.timeoutMs, DEFAULT_TIMEOUT_MS, 3_600_000);
    const backend = new RedisBackend({
      url: options.url ?? 'redis://127.0.0.1:6379',
      prefix: options.keyPrefix ?? 'kvc:',
      partBytes: positiveInteger('options.partBytes', options.partBytes, 8 << 20, 512 << 20),
      ttlSeconds: options.ttlSeconds === 0 ? 0 : positiveInteger('options.ttlSeconds', options.ttlSeconds, 86_400),
      timeoutMs,
      readConnections: positiveInteger('options.loadConnections', options.loadConnections, 2, 64),
    });
    return new PrefixStore(backend, options);
  }

  /** @internal A store over a backend built by the caller (tests, custom backends). */
  static fromBackend(backend: StoreBackend, options: PrefixStoreOptions = {}): PrefixStore {
    return new PrefixStore(backend, options);
  }

  /** Where the entries are kept. */
  get backend(): 'memory' | 'directory' | 'redis' {
    return this.#backend.name;
  }

  /**
   * The longest stored prefix of `tokens` that a cache configured like `cache` (default: the
   * store's `options.cache`) can load. Only keys are looked up: two or three round trips.
   */
  async match(tokens: ArrayLike<number>, cache?: KVCache): Promise<PrefixMatch> {
    const ids = tokenIds(tokens);
    const config = this.#configOf(cache);
    this.#counters.matches++;
    const plan = await this.#guard('match', this.#timeoutMs, () => this.#plan(ids, config), null);
    this.#count(plan !== null);
    return plan ? { length: plan.length, kind: plan.kind } : { length: 0, kind: null };
  }

  /**
   * Stores `seq` as the cache of `tokens`. A sequence whose rows still map onto the tokens one
   * to one (every stream at positions 0..n-1) is stored in chunks that any later prompt
   * sharing a chunk-aligned prefix reuses; an evicted or compacted one as one whole entry.
   * `meta` (JSON) is returned by load. Resolves to null when the store failed.
   */
  async put(tokens: ArrayLike<number>, seq: Sequence, meta?: unknown): Promise<PutResult | null> {
    const ids = tokenIds(tokens);
    if (!Sequence.isSequence(seq)) throw invalidArgument('seq', 'a Sequence', seq);
    if (ids.length === 0) throw invalidArgument('tokens', 'at least one token', tokens);
    this.#checkOpen();
    const bytes = seq.export();
    // null for low-rank streams (bases before the tables): stored whole, like a compacted sequence.
    const layout = readExportLayout(bytes);
    const print = fingerprint(this.#model, seq.cache.config, this.#chunk);
    this.#counters.puts++;
    // Each backend call has its own deadline (a put of many entries is many calls, each of
    // which may have to reach the disk), so the whole put has none of its own.
    return this.#guard('put', Infinity, async () => {
      const written = { entries: 0, bytes: 0 };
      const write = async (key: string, kind: EntryKind, length: number, rows: number, payload: Uint8Array) => {
        const frame = encodeEntry({ kind, tokens: length, rows, meta, payload });
        const deadline = this.#timeoutMs + (1000 * frame.length) / this.#minRate;
        if (await this.#withTimeout(this.#backend.putIfAbsent(key, frame), deadline)) (written.entries++, (written.bytes += frame.length));
      };
      const chain = chainHashes(print, ids, this.#chunk);
      const chunks = chain.length - 1;
      const tail = ids.length - chunks * this.#chunk;
      let kind: PrefixKind;
      if (layout && isPlainPrefix(bytes, layout, ids.length)) {
        kind = 'plain';
        const keys = Array.from({ length: chunks }, (_, i) => chunkKey(chain, i + 1));
        const present = await this.#withTimeout(this.#backend.has(keys), this.#timeoutMs);
        // In order, so that a reader racing this put finds a gap-free run of chunks.
        for (let k = 1; k <= chunks; k++) {
          if (!present[k - 1]) await write(keys[k - 1]!, 'chunk', k * this.#chunk, this.#chunk, chunkPayload(bytes, layout, (k - 1) * this.#chunk, this.#chunk));
        }
        if (tail > 0) {
          const key = prefixKey('t', chain, ids, ids.length, this.#chunk);
          await write(key, 'tail', ids.length, tail, chunkPayload(bytes, layout, chunks * this.#chunk, tail));
          await this.#withTimeout(this.#backend.addMarker(markerKey(chain, chunks), `${ids.length}:t`, key), this.#timeoutMs);
        }
      } else {
        kind = 'compacted';
        const key = prefixKey('w', chain, ids, ids.length, this.#chunk);
        await write(key, 'whole', ids.length, 0, bytes);
        await this.#withTimeout(this.#backend.addMarker(markerKey(chain, chunks), `${ids.length}:w`, key), this.#timeoutMs);
      }
      this.#counters.bytesWritten += written.bytes;
      return { kind, length: ids.length, entriesWritten: written.entries, bytesWritten: written.bytes };
    }, null);
  }

  /**
   * Imports the longest stored prefix of `tokens` into `cache` as a new sequence, or resolves
   * to null on a miss. Entries are verified first; a damaged one is deleted and is a miss.
   */
  async load(tokens: ArrayLike<number>, cache: KVCache): Promise<LoadedPrefix | null> {
    const ids = tokenIds(tokens);
    const config = this.#configOf(cache);
    this.#counters.loads++;
    const plan = await this.#guard('match', this.#timeoutMs, () => this.#plan(ids, config), null);
    if (!plan) return this.#count(false);
    const deadline = this.#timeoutMs + (1000 * plan.length * exportBytesPerToken(config)) / this.#minRate;
    // The read and the join borrow the kept buffers; a loan ends once the import is done and
    // the read has settled (a read abandoned at its deadline may still be writing).
    const loans: (() => void)[] = [];
    const borrow = (scratch: Scratch) => (bytes: number) => {
      const loan = scratch.take(bytes);
      loans.push(loan.done);
      return loan.buffer;
    };
    let reading: Promise<unknown> = Promise.resolve();
    // Entries are checked and imported as they arrive (backends that read them one by one
    // hand each over at once); the rest when all are in.
    const receiver = new EntryReceiver(plan, this.#chunk, borrow(this.#joined), cache);
    try {
      const values = await this.#guard('load', deadline, () => (reading = this.#backend.get(plan.keys, borrow(this.#received), (i, v) => receiver.take(i, v))), null);
      if (!values) return this.#count(false);
      values.forEach((v, i) => receiver.take(i, v));
      const loaded = await this.#import(plan, receiver.finish(), cache);
      if (!loaded) return this.#count(false);
      this.#count(true);
      return loaded;
    } finally {
      receiver.abort(); // a load that did not finish (a timeout, a store failure) holds no blocks
      const release = () => loans.forEach((done) => done());
      reading.then(release, release);
    }
  }

  /** Deletes what is stored for exactly `tokens` (its chunks, tail and whole entries) for caches like `cache`. */
  async delete(tokens: ArrayLike<number>, cache?: KVCache): Promise<void> {
    const ids = tokenIds(tokens);
    const print = fingerprint(this.#model, this.#configOf(cache), this.#chunk);
    await this.#guard('delete', this.#timeoutMs, async () => {
      const chain = chainHashes(print, ids, this.#chunk);
      const keys = Array.from({ length: chain.length - 1 }, (_, i) => chunkKey(chain, i + 1));
      keys.push(prefixKey('t', chain, ids, ids.length, this.#chunk), prefixKey('w', chain, ids, ids.length, this.#chunk));
      await this.#backend.delete(keys);
    }, undefined);
  }

  /** Counters since the store was made, and what the backend holds where it can tell. */
  async stats(): Promise<PrefixStoreStats> {
    const held = this.#closed ? {} : await this.#guard('stats', this.#timeoutMs, () => this.#backend.stats(), {});
    return { backend: this.#backend.name, ...this.#counters, ...held };
  }

  /** Closes the connection (Redis) or drops the entries (memory). Later calls throw DISPOSED. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#received.clear();
    this.#joined.clear();
    await this.#withTimeout(this.#backend.close(), this.#timeoutMs).catch(() => undefined);
  }

  /** `await using store = ...`: close() at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw new KVCacheError('DISPOSED', 'the prefix store has been closed');
  }

  #configOf(cache: KVCache | undefined): KVCacheConfig {
    if (cache === undefined && this.#defaultConfig) {
      this.#checkOpen();
      return this.#defaultConfig;
    }
    if (!(cache instanceof KVCache)) throw invalidArgument('cache', 'a KVCache (or the store created with options.cache)', cache);
    cache.checkAlive();
    this.#checkOpen();
    return cache.config;
  }

  async #plan(ids: Uint32Array, config: KVCacheConfig): Promise<Plan | null> {
    return findPrefix(this.#backend, fingerprint(this.#model, config, this.#chunk), ids, this.#chunk, this.#prefer);
  }

  /** Counts a lookup's outcome; returns null for the miss paths' convenience. */
  #count(hit: boolean): null {
    if (hit) this.#counters.hits++;
    else this.#counters.misses++;
    return null;
  }

  async #import(plan: Plan, received: Received, cache: KVCache): Promise<LoadedPrefix | null> {
    if ('gone' in received) return null;
    if ('damaged' in received) return this.#discard(received.damaged, received.why);
    if ('sequence' in received) return this.#loaded(plan, received.sequence, received.bytes, received.meta);
    const { bytes, meta } = received;
    let sequence: Sequence;
    try {
      sequence = cache.importSequence(bytes);
    } catch (e) {
      // Bytes that passed the entry checksum but not the import's checks were written wrong
      // (or under a colliding key): never useful, so deleted.
      if (e instanceof KVCacheError && (e.code === 'CORRUPT_DATA' || e.code === 'SHAPE_MISMATCH' || e.code === 'INVALID_ARGUMENT')) {
        return this.#discard(plan.keys, e.message);
      }
      throw e;
    }
    return this.#loaded(plan, sequence, bytes.length, meta);
  }

  async #loaded(plan: Plan, sequence: Sequence, bytes: number, meta: unknown): Promise<LoadedPrefix | null> {
    if (sequence.nextPosition(0) !== plan.length) {
      sequence.free();
      return this.#discard(plan.keys, `an entry for ${plan.length} tokens continues at ${sequence.nextPosition(0)}`);
    }
    this.#counters.bytesRead += bytes;
    return { sequence, length: plan.length, kind: plan.kind, meta, bytes };
  }

  async #discard(keys: string[], why: string): Promise<null> {
    this.#counters.corrupt++;
    this.#report(new KVCacheError('CORRUPT_DATA', `prefix store: ${why}; deleted and treated as a miss`), false);
    await this.#withTimeout(this.#backend.delete(keys), this.#timeoutMs).catch((e: Error) => this.#report(e, false));
    return null;
  }

  #report(error: Error, fatal: boolean): void {
    this.#onError?.(error);
    if (fatal && this.#throw) throw error;
  }

  #withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
    if (ms === Infinity) return work;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Timeout(`no answer within ${Math.round(ms)} ms`)), ms);
    });
    work.catch(() => undefined); // a late failure of abandoned work is not unhandled
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  /** Runs a store operation under a deadline; a failure becomes `fallback` (or throws when asked). */
  async #guard<T>(what: string, ms: number, work: () => Promise<T>, fallback: T): Promise<T> {
    try {
      return await this.#withTimeout(work(), ms);
    } catch (e) {
      if (e instanceof KVCacheError && e.code !== 'CORRUPT_DATA') throw e; // misuse, not a store failure
      const timedOut = e instanceof Timeout;
      if (timedOut) this.#counters.timeouts++;
      else this.#counters.errors++;
      const code = timedOut ? 'STORE_TIMEOUT' : 'STORE_UNAVAILABLE';
      const error = new KVCacheError(code, `prefix store (${this.#backend.name}) ${what} failed: ${(e as Error).message}`, { cause: e });
      this.#report(error, true);
      return fallback;
    }
  }
}
