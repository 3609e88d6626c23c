// Failure behaviour against real servers and files: a Redis server stopped mid-run, paused
// (slow) or never there turns every operation into a miss within the timeout (or a thrown
// error when asked); damaged and truncated Redis values are deleted and missed; racing
// writers of the same prefix leave one whole entry and no orphan parts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { KVCache, KVCacheError, PrefixStore } from '../../lib/index';
import { chainHashes, chunkKey, fingerprint } from '../../lib/prefix-store/keys';
import { testRng } from '../reference/random';
import { makeCache, plainSequence, prefixExport, privateRedis, sharedRedis, tempDir, tokenIds, uniquePrefix, type RedisServer } from './support';

const CHUNK = 16;
const TIMEOUT = 200;
// The bound a miss must arrive within: the timeout plus scheduling slack on a busy machine.
const WITHIN = TIMEOUT + 300;

async function timed<T>(work: Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const value = await work;
  return [value, performance.now() - t0];
}

describe('Redis down, slow or stopped mid-run', () => {
  let server: RedisServer;
  let cache: KVCache;
  beforeAll(async () => {
    server = await privateRedis();
    cache = makeCache();
  });
  afterAll(async () => {
    await server.stop();
    cache.dispose();
  });

  it('a server stopped mid-run: misses within the timeout, then works again after a restart', async () => {
    const errors: Error[] = [];
    const store = PrefixStore.redis({ url: server.url, chunkTokens: CHUNK, timeoutMs: TIMEOUT, onError: (e) => errors.push(e) });
    const rng = testRng('stopped');
    const ids = tokenIds(rng, 3 * CHUNK);
    const seq = plainSequence(cache, rng, ids.length);
    expect(await store.put(ids, seq)).toMatchObject({ kind: 'plain', entriesWritten: 3 });
    expect(await store.match(ids, cache)).toEqual({ length: 3 * CHUNK, kind: 'plain' });

    await server.stop();
    for (let i = 0; i < 3; i++) {
      const [m, ms] = await timed(store.match(ids, cache));
      expect(m).toEqual({ length: 0, kind: null });
      expect(ms, `match ${i} answered in ${ms.toFixed(0)} ms`).toBeLessThan(WITHIN);
    }
    const [loaded, loadMs] = await timed(store.load(ids, cache));
    expect(loaded).toBeNull();
    expect(loadMs).toBeLessThan(WITHIN);
    const [put, putMs] = await timed(store.put(ids, seq));
    expect(put).toBeNull();
    expect(putMs).toBeLessThan(WITHIN + 200);
    const stats = await store.stats();
    expect(stats.errors + stats.timeouts).toBeGreaterThanOrEqual(5);
    expect(errors.length).toBeGreaterThanOrEqual(5);
    // a refused connection is STORE_UNAVAILABLE, one that does not answer in time STORE_TIMEOUT
    expect(errors.every((e) => e instanceof KVCacheError && (e.code === 'STORE_UNAVAILABLE' || e.code === 'STORE_TIMEOUT'))).toBe(true);
    expect(errors.filter((e) => (e as KVCacheError).code === 'STORE_TIMEOUT').length).toBe(stats.timeouts);

    // asked to throw: the same failure rejects, with the store's error as the cause
    const strict = PrefixStore.redis({ url: server.url, chunkTokens: CHUNK, timeoutMs: TIMEOUT, throwOnError: true });
    const thrown = await strict.match(ids, cache).then(() => null, (e: unknown) => e);
    expect(thrown).toBeInstanceOf(KVCacheError);
    expect(['STORE_UNAVAILABLE', 'STORE_TIMEOUT']).toContain((thrown as KVCacheError).code);
    expect((thrown as KVCacheError).cause).toBeInstanceOf(Error);
    await strict.close();

    // back up (empty: the server kept nothing); the client reconnects by itself
    await server.start();
    let back = false;
    for (let i = 0; i < 60 && !back; i++) {
      back = (await store.put(ids, seq)) !== null;
      if (!back) await new Promise((r) => setTimeout(r, 100));
    }
    expect(back, 'puts succeed again after the restart').toBe(true);
    expect(await store.match(ids, cache)).toEqual({ length: 3 * CHUNK, kind: 'plain' });
    seq.free();
    await store.close();
  });

  it('a paused (slow) server and a server that was never there: misses within the timeout', async () => {
    const store = PrefixStore.redis({ url: server.url, chunkTokens: CHUNK, timeoutMs: TIMEOUT });
    const rng = testRng('slow');
    const ids = tokenIds(rng, 2 * CHUNK);
    const seq = plainSequence(cache, rng, ids.length);
    await store.put(ids, seq);
    const admin = new Redis(server.url);
    try {
      await admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
      const [m, ms] = await timed(store.match(ids, cache));
      expect(m).toEqual({ length: 0, kind: null });
      expect(ms).toBeLessThan(WITHIN);
      expect((await store.stats()).timeouts).toBe(1);
      const strict = PrefixStore.redis({ url: server.url, chunkTokens: CHUNK, timeoutMs: TIMEOUT, throwOnError: true });
      await expect(strict.match(ids, cache)).rejects.toMatchObject({ name: 'KVCacheError', code: 'STORE_TIMEOUT' });
      strict.close().catch(() => undefined);
    } finally {
      await admin.call('CLIENT', 'UNPAUSE');
      admin.disconnect();
    }
    // the answers that arrive after the pause do not disturb the next lookups
    expect(await store.match(ids, cache)).toEqual({ length: 2 * CHUNK, kind: 'plain' });

    const nowhere = PrefixStore.redis({ url: 'redis://127.0.0.1:1', chunkTokens: CHUNK, timeoutMs: TIMEOUT });
    const [m2, ms2] = await timed(nowhere.match(ids, cache));
    expect(m2).toEqual({ length: 0, kind: null });
    expect(ms2).toBeLessThan(WITHIN);
    expect(await nowhere.load(ids, cache)).toBeNull();
    await nowhere.close();
    const refused = PrefixStore.redis({ url: 'redis://127.0.0.1:1', chunkTokens: CHUNK, timeoutMs: 2000, throwOnError: true });
    await expect(refused.match(ids, cache)).rejects.toMatchObject({ name: 'KVCacheError', code: 'STORE_UNAVAILABLE' });
    await refused.close();
    seq.free();
    await store.close();
  });
});

describe('damaged values and racing writers', () => {
  let cache: KVCache;
  let url: string;
  beforeAll(async () => {
    url = (await sharedRedis()).url;
    cache = makeCache();
  });
  afterAll(async () => {
    cache.dispose();
    await (await sharedRedis()).stop();
  });

  async function keysUnder(client: Redis, prefix: string): Promise<string[]> {
    return client.keys(prefix + '*');
  }

  it('a corrupted part and a missing part: deleted, reported as misses, never imported', async () => {
    const prefix = uniquePrefix('corrupt');
    const store = PrefixStore.redis({ url, keyPrefix: prefix, chunkTokens: CHUNK, partBytes: 512, timeoutMs: 2000 });
    const client = new Redis(url);
    const rng = testRng('corrupt-redis');
    for (const damage of ['flip', 'drop'] as const) {
      const ids = tokenIds(rng, 2 * CHUNK);
      const seq = plainSequence(cache, rng, ids.length);
      await store.put(ids, seq);
      // a part of the second chunk's entry (the first chunk stays intact)
      const second = chunkKey(chainHashes(fingerprint('default', cache.config, CHUNK), Uint32Array.from(ids), CHUNK), 2);
      const parts = (await keysUnder(client, `${prefix}p:${second}:`)).sort();
      expect(parts.length).toBeGreaterThan(1);
      const victim = parts[parts.length - 1]!;
      if (damage === 'flip') {
        const v = (await client.getBuffer(victim))!;
        v[v.length >> 1]! ^= 0x01;
        await client.set(victim, v, 'KEEPTTL');
      } else {
        await client.del(victim);
      }
      const before = cache.stats().sequences;
      expect(await store.load(ids, cache), damage).toBeNull();
      expect(cache.stats().sequences).toBe(before);
      // the damaged entry is gone with all its parts; the intact chunk stays
      expect(await store.match(ids, cache), damage).toEqual({ length: CHUNK, kind: 'plain' });
      await store.delete(ids, cache);
      expect(await keysUnder(client, prefix), 'nothing left').toEqual([]);
      seq.free();
    }
    expect((await store.stats()).corrupt).toBe(2);
    client.disconnect();
    await store.close();
  });

  it('racing writers of one prefix (Redis and directory): one whole entry, no orphan parts, bit-exact load', async () => {
    const rng = testRng('race');
    const ids = tokenIds(rng, 4 * CHUNK + 3);
    const seq = plainSequence(cache, rng, ids.length);
    const prefix = uniquePrefix('race');
    const dir = tempDir('race');
    const writers = [
      ...Array.from({ length: 6 }, () => PrefixStore.redis({ url, keyPrefix: prefix, chunkTokens: CHUNK, partBytes: 700, timeoutMs: 5000 })),
      ...Array.from({ length: 6 }, () => PrefixStore.directory(dir, { chunkTokens: CHUNK })),
    ];
    const results = await Promise.all(writers.map((w) => w.put(ids, seq)));
    expect(results.every((r) => r !== null)).toBe(true);
    const redisWritten = results.slice(0, 6).reduce((n, r) => n + r!.entriesWritten, 0);
    const dirWritten = results.slice(6).reduce((n, r) => n + r!.entriesWritten, 0);
    expect(redisWritten, 'each of the 5 entries written once in Redis').toBe(5);
    expect(dirWritten, 'each of the 5 entries written once in the directory').toBe(5);
    const client = new Redis(url);
    const manifests = await keysUnder(client, prefix + 'e:');
    const parts = await keysUnder(client, prefix + 'p:');
    expect(manifests.length).toBe(5);
    const expectedParts = (await Promise.all(manifests.map((m) => client.get(m)))).reduce((n, v) => n + Number(v!.split(':')[0]), 0);
    expect(parts.length, 'losers deleted their parts').toBe(expectedParts);
    for (const w of [writers[0]!, writers[6]!]) {
      const loaded = (await w.load(ids, cache))!;
      expect(Buffer.from(loaded.sequence.export()).equals(Buffer.from(prefixExport(seq, ids.length)))).toBe(true);
      loaded.sequence.free();
    }
    client.disconnect();
    await Promise.all(writers.map((w) => w.close()));
    seq.free();
  });
});
