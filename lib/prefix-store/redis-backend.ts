// Backend over Redis (ioredis), for sharing entries across processes and machines. An entry
// is split into parts of at most `partBytes` (bounded values: no huge allocations in the
// server, evenly spread memory) under keys private to the writer, and a small manifest is
// written last with SET NX: readers see a whole entry or none, and racing writers are
// harmless (the loser deletes its parts). Every key carries a TTL, so a server run with a
// maxmemory policy or left alone forgets old entries; a part that was evicted before its
// manifest makes the entry fail verification, which the store reports as a miss.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';

import { KVCacheError } from '../errors';

import type { BackendStats, StoreBackend } from './backend';
import { Parts } from './parts';

export interface RedisBackendOptions {
  url: string;
  /** Key prefix (namespace) in the Redis database. Default 'kvc:'. */
  prefix: string;
  /** Largest single value written. */
  partBytes: number;
  /** Time to live of every key in seconds; 0 keeps keys until deleted or evicted. */
  ttlSeconds: number;
  /** Connection timeout in milliseconds. */
  timeoutMs: number;
}

/**
 * ioredis is an optional peer dependency: loaded when a Redis store is first made, so that
 * the memory and directory stores need nothing beyond kvcompact.
 */
function loadIoredis(): typeof import('ioredis') {
  try {
    return require('ioredis') as typeof import('ioredis');
  } catch (e) {
    throw new KVCacheError('UNSUPPORTED', 'PrefixStore.redis needs the ioredis package (npm install ioredis)', { cause: e });
  }
}

/** Manifest value: "<parts>:<total bytes>:<writer nonce>". */
function parseManifest(v: string | null): { parts: number; total: number; nonce: string } | null {
  if (v === null) return null;
  const m = /^(\d+):(\d+):([0-9a-f]+)$/.exec(v);
  return m ? { parts: Number(m[1]), total: Number(m[2]), nonce: m[3]! } : null;
}

export class RedisBackend implements StoreBackend {
  readonly name = 'redis';
  readonly #o: RedisBackendOptions;
  readonly #client: Redis;
  /** The client's last connection error, for stats (ioredis reports them as events). */
  lastError: Error | undefined;

  constructor(options: RedisBackendOptions) {
    this.#o = options;
    this.#client = new (loadIoredis().Redis)(options.url, {
      connectTimeout: Math.max(options.timeoutMs, 50),
      // No per-command timeout: a multi-gigabyte load is many pipelined commands whose last
      // reply comes long after the first was sent. The store puts a deadline on each
      // operation as a whole (timeoutMs for lookups, plus a minimum transfer rate for data).
      // A command sent while the server is down fails after one reconnection attempt instead
      // of queueing without bound; the store turns the failure into a miss.
      maxRetriesPerRequest: 1,
      retryStrategy: (times) => Math.min(50 * times, 1000),
      keyPrefix: options.prefix,
      lazyConnect: false,
    });
    this.#client.on('error', (e: Error) => {
      this.lastError = e;
    });
  }

  #manifestKey(key: string): string {
    return 'e:' + key;
  }

  #partKey(key: string, nonce: string, i: number): string {
    return `p:${key}:${nonce}:${i}`;
  }

  async has(keys: readonly string[]): Promise<boolean[]> {
    if (keys.length === 0) return [];
    const values = await this.#client.mget(keys.map((k) => this.#manifestKey(k)));
    return values.map((v) => v !== null);
  }

  async get(keys: readonly string[]): Promise<(Uint8Array | Parts | null)[]> {
    if (keys.length === 0) return [];
    const manifests = (await this.#client.mget(keys.map((k) => this.#manifestKey(k)))).map(parseManifest);
    // All parts of all entries in one pipeline: one round trip however many parts.
    const pipeline = this.#client.pipeline();
    manifests.forEach((m, j) => {
      if (m && m.parts > 0) pipeline.mgetBuffer(Array.from({ length: m.parts }, (_, i) => this.#partKey(keys[j]!, m.nonce, i)));
    });
    const replies = pipeline.length > 0 ? ((await pipeline.exec()) ?? []) : [];
    let r = 0;
    return manifests.map((m) => {
      if (!m) return null;
      // A manifest that does not parse counts as a damaged entry: an empty value fails verification.
      if (m.parts === 0) return new Uint8Array(0);
      const [err, parts] = replies[r++] ?? [new Error('missing reply'), null];
      if (err) throw err;
      const buffers = parts as (Buffer | null)[];
      // A part evicted or expired before its manifest: return what is there; verification fails.
      const present = buffers.filter((b): b is Buffer => b !== null);
      return present.length === 1 ? present[0]! : new Parts(present);
    });
  }

  async putIfAbsent(key: string, value: Uint8Array): Promise<boolean> {
    const manifestKey = this.#manifestKey(key);
    if ((await this.#client.exists(manifestKey)) === 1) return false;
    const nonce = randomBytes(6).toString('hex');
    const parts = Math.max(1, Math.ceil(value.length / this.#o.partBytes));
    const ttl = this.#o.ttlSeconds;
    const pipeline = this.#client.pipeline();
    const buffer = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    for (let i = 0; i < parts; i++) {
      const part = buffer.subarray(i * this.#o.partBytes, Math.min(value.length, (i + 1) * this.#o.partBytes));
      // Parts outlive their manifest by a minute, so a live manifest never points at parts that expired first.
      if (ttl > 0) pipeline.set(this.#partKey(key, nonce, i), part, 'EX', ttl + 60);
      else pipeline.set(this.#partKey(key, nonce, i), part);
    }
    const written = await pipeline.exec();
    const failed = written?.find(([e]) => e);
    const partKeys = Array.from({ length: parts }, (_, i) => this.#partKey(key, nonce, i));
    if (failed) {
      await this.#client.del(partKeys).catch(() => undefined);
      throw failed[0];
    }
    const manifest = `${parts}:${value.length}:${nonce}`;
    const ok = ttl > 0 ? await this.#client.set(manifestKey, manifest, 'EX', ttl, 'NX') : await this.#client.set(manifestKey, manifest, 'NX');
    if (ok === 'OK') return true;
    await this.#client.del(partKeys);
    return false;
  }

  async delete(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    const manifests = (await this.#client.mget(keys.map((k) => this.#manifestKey(k)))).map(parseManifest);
    const doomed: string[] = keys.map((k) => this.#manifestKey(k));
    manifests.forEach((m, j) => {
      if (m) for (let i = 0; i < m.parts; i++) doomed.push(this.#partKey(keys[j]!, m.nonce, i));
    });
    await this.#client.unlink(doomed); // UNLINK: large values are freed off the server's main thread
  }

  async addMarker(set: string, member: string): Promise<void> {
    const pipeline = this.#client.pipeline().sadd(set, member);
    if (this.#o.ttlSeconds > 0) pipeline.expire(set, this.#o.ttlSeconds);
    await pipeline.exec();
  }

  async markers(sets: readonly string[]): Promise<string[]> {
    if (sets.length === 0) return [];
    return this.#client.sunion(...sets);
  }

  async stats(): Promise<BackendStats> {
    return {};
  }

  async close(): Promise<void> {
    try {
      await this.#client.quit();
    } catch {
      this.#client.disconnect();
    }
  }
}
