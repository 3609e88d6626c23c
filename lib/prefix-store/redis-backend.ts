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

import type { BackendStats, OnValue, StoreBackend } from './backend';
import { Parts } from './parts';
import { plainEndpoint, readBulk, type RedisEndpoint } from './redis-bulk-read';

/** Values of at least this many bytes in all are read by readBulk (straight into their buffers). */
const BULK_READ_MIN_BYTES = 4 << 20;

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
  /** Connections a large read is spread over (default 2). */
  readConnections?: number;
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

/**
 * The lookup script: ARGV[1] the key prefix, ARGV[2] manifest keys and ARGV[3] marker sets,
 * each newline-joined; returns "1"/"0" per manifest (exists) and the union of the sets.
 */
const LOOKUP_SCRIPT = `
local p = ARGV[1]
local present = {}
for k in string.gmatch(ARGV[2], '[^\\n]+') do
  present[#present + 1] = redis.call('EXISTS', p .. k) == 1 and '1' or '0'
end
local sets = {}
for s in string.gmatch(ARGV[3], '[^\\n]+') do sets[#sets + 1] = p .. s end
local members = {}
if #sets > 0 then members = redis.call('SUNION', unpack(sets)) end
return {table.concat(present), members}
`;

interface ScriptedClient {
  kvcLookup(prefix: string, keys: string, sets: string): Promise<unknown>;
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
  /** Where readBulk connects (null: a URL it does not handle; every read goes through ioredis). */
  readonly #endpoint: RedisEndpoint | null;
  /** Whether lookups go through LOOKUP_SCRIPT (until the server refuses scripts). */
  #scripted = true;

  /** Whether lookups still run as one server-side script (false once the server refused scripts). */
  get lookupByScript(): boolean {
    return this.#scripted;
  }
  /** The client's last connection error, for stats (ioredis reports them as events). */
  lastError: Error | undefined;

  constructor(options: RedisBackendOptions) {
    this.#o = options;
    this.#endpoint = plainEndpoint(options.url);
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
    // EVALSHA, with EVAL once when the server does not know the script yet (ioredis does both).
    this.#client.defineCommand('kvcLookup', { numberOfKeys: 0, lua: LOOKUP_SCRIPT });
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

  async get(keys: readonly string[], allocate?: (bytes: number) => Uint8Array, onValue?: OnValue): Promise<(Uint8Array | Parts | null)[]> {
    if (keys.length === 0) return [];
    const manifests = (await this.#client.mget(keys.map((k) => this.#manifestKey(k)))).map(parseManifest);
    const total = manifests.reduce((sum, m) => sum + (m ? m.total : 0), 0);
    if (this.#endpoint && total >= BULK_READ_MIN_BYTES) return this.#getBulk(keys, manifests, allocate, onValue);
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

  /** Large reads: every part of every entry, pipelined, straight into one buffer per entry. */
  async #getBulk(
    keys: readonly string[],
    manifests: (ReturnType<typeof parseManifest>)[],
    allocate?: (bytes: number) => Uint8Array,
    onValue?: OnValue,
  ): Promise<(Uint8Array | null)[]> {
    // A manifest that cannot describe a real entry (no parts, more parts than bytes, parts
    // larger than any writer makes) is a damaged entry: an empty value, which fails verification.
    const plausible = (m: NonNullable<ReturnType<typeof parseManifest>>) => m.parts > 0 && m.parts <= m.total && m.total <= m.parts * (512 << 20);
    const present = manifests.flatMap((m, j) => (m && plausible(m) ? [{ m, j }] : []));
    const requests = present.map(({ m, j }) => ({
      keys: Array.from({ length: m.parts }, (_, i) => this.#o.prefix + this.#partKey(keys[j]!, m.nonce, i)),
      bytes: m.total,
    }));
    // The connection is abandoned after this long without data (the store's own deadline
    // usually answers first; this only bounds how long a dead read holds its socket).
    const values = await readBulk(this.#endpoint!, requests, Math.max(this.#o.timeoutMs, 10_000), {
      allocate,
      connections: this.#o.readConnections ?? 2,
      onValue: onValue && ((i, value) => onValue(present[i]!.j, value)),
    });
    const out: (Uint8Array | null)[] = manifests.map((m) => (m ? new Uint8Array(0) : null));
    present.forEach(({ j }, i) => (out[j] = values[i]!));
    return out;
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

  // The entry is not needed: a marker carries the TTL of its entry, and one left by an entry
  // the server evicted early is removed by the first lookup that finds it stale.
  async addMarker(set: string, member: string, _entry?: string): Promise<void> {
    const pipeline = this.#client.pipeline().sadd(set, member);
    if (this.#o.ttlSeconds > 0) pipeline.expire(set, this.#o.ttlSeconds);
    await pipeline.exec();
  }

  /**
   * Which manifests exist and the union of the marker sets, in one round trip: a server-side
   * script given the keys as two newline-joined arguments (a 32K-token prompt is 128
   * manifests and 129 sets: as 257 separate arguments, building and parsing the command
   * cost the client more than the round trip). Where scripting is unavailable, the same as
   * MGET + SUNION in one pipeline.
   */
  async lookup(keys: readonly string[], sets: readonly string[]): Promise<[boolean[], string[]]> {
    if (keys.length === 0 || sets.length === 0) return Promise.all([this.has(keys), this.markers(sets)]);
    if (this.#scripted) {
      try {
        const [present, members] = (await (this.#client as unknown as ScriptedClient).kvcLookup(
          this.#o.prefix,
          keys.map((k) => this.#manifestKey(k)).join('\n'),
          sets.join('\n'),
        )) as [string, string[]];
        if (typeof present !== 'string' || present.length !== keys.length) throw new Error('prefix store: malformed lookup reply');
        return [Array.from(present, (c) => c === '1'), members];
      } catch (e) {
        // Scripts refused (disabled, or a proxy without EVAL): pipelined commands from now on.
        if (!/unknown command|NOPERM|not allowed|disabled/i.test((e as Error).message)) throw e;
        this.#scripted = false;
      }
    }
    const replies = (await this.#client.pipeline().mget(keys.map((k) => this.#manifestKey(k))).sunion(...sets).exec()) ?? [];
    const [e1, values] = replies[0] ?? [new Error('missing reply'), null];
    const [e2, members] = replies[1] ?? [new Error('missing reply'), null];
    if (e1) throw e1;
    if (e2) throw e2;
    return [(values as (string | null)[]).map((v) => v !== null), members as string[]];
  }

  async markers(sets: readonly string[]): Promise<string[]> {
    if (sets.length === 0) return [];
    return this.#client.sunion(...sets);
  }

  async removeMarker(set: string, member: string): Promise<void> {
    await this.#client.srem(set, member);
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
