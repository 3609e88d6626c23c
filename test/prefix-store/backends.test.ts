// PrefixStore behaviour, the same for every backend (memory, directory, Redis): what match
// finds, that load imports exactly the bytes that were put (bit-exact export of the same
// prefix), plain chunk chains and tails, compacted whole entries, incompatible caches, and
// damaged entries (deleted, reported as misses, never imported).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Compactor, KVCache, KVCacheError, PrefixStore } from '../../lib/index';
import { testRng } from '../reference/random';
import type { StoreBackend } from '../../lib/prefix-store/backend';
import { DirectoryBackend } from '../../lib/prefix-store/directory-backend';
import { chainHashes, chunkKey, fingerprint } from '../../lib/prefix-store/keys';
import { MemoryBackend } from '../../lib/prefix-store/memory-backend';
import { Parts } from '../../lib/prefix-store/parts';
import { RedisBackend } from '../../lib/prefix-store/redis-backend';
import { makeCache, plainSequence, prefixExport, sharedRedis, tempDir, tokenIds, uniquePrefix } from './support';

const CHUNK = 16;

type Opened = { store: PrefixStore; backend: StoreBackend };
type Factory = (label: string, errors?: Error[]) => Promise<Opened>;
const options = (errors?: Error[]) => ({ chunkTokens: CHUNK, model: 'test-model', timeoutMs: 2000, onError: (e: Error) => errors?.push(e) });
const backends: [string, Factory][] = [
  ['memory', async (_, errors) => opened(new MemoryBackend(2 ** 30), errors)],
  ['directory', async (label, errors) => opened(new DirectoryBackend(tempDir(label)), errors)],
  [
    'redis',
    async (label, errors) =>
      opened(new RedisBackend({ url: (await sharedRedis()).url, prefix: uniquePrefix(label), partBytes: 1000, ttlSeconds: 600, timeoutMs: 2000 }), errors),
  ],
  [
    // A server (or proxy) that refuses scripts: lookups fall back to MGET + SUNION in one pipeline.
    'redis, scripting refused',
    async (label, errors) =>
      opened(new RedisBackend({ url: await noScriptingUser(), prefix: uniquePrefix(label), partBytes: 1000, ttlSeconds: 600, timeoutMs: 2000 }), errors),
  ],
];

/** The shared server's URL as an ACL user that may run every command except scripts. */
async function noScriptingUser(): Promise<string> {
  const url = new URL((await sharedRedis()).url);
  const { default: Redis } = await import('ioredis');
  const admin = new Redis(url.toString(), { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await admin.connect();
    await admin.call('ACL', 'SETUSER', 'kvc-test-noscript', 'reset', 'on', '>kvc-test-noscript', '~*', '&*', '+@all', '-@scripting');
  } finally {
    admin.disconnect();
  }
  url.username = 'kvc-test-noscript';
  url.password = 'kvc-test-noscript';
  return url.toString();
}

function opened(backend: StoreBackend, errors?: Error[]): Opened {
  return { store: PrefixStore.fromBackend(backend, options(errors)), backend };
}

afterAll(async () => {
  const r = await sharedRedis().catch(() => undefined);
  await r?.stop();
});

for (const [name, open] of backends) {
  describe(`PrefixStore (${name})`, () => {
    let cache: KVCache;
    beforeAll(() => {
      cache = makeCache();
    });
    afterAll(() => cache.dispose());

    it('plain prefixes: every chunk boundary and the exact tail are found and load bit-exact', async () => {
      const { store } = await open('plain');
      const rng = testRng(`plain-${name}`);
      const n = 5 * CHUNK + 7; // five chunks and a tail
      const ids = tokenIds(rng, n);
      const seq = plainSequence(cache, rng, n);
      expect(await store.match(ids, cache)).toEqual({ length: 0, kind: null });
      const put = await store.put(ids, seq, { doc: 'A' });
      expect(put).toMatchObject({ kind: 'plain', length: n, entriesWritten: 6 });
      // again: every entry is already there
      expect(await store.put(ids, seq)).toMatchObject({ entriesWritten: 0, bytesWritten: 0 });

      expect(await store.match(ids, cache)).toEqual({ length: n, kind: 'plain' });
      // a longer prompt starting with the document
      expect(await store.match([...ids, 1, 2, 3], cache)).toEqual({ length: n, kind: 'plain' });
      // a prompt that leaves the document inside chunk 4: the first 3 chunks are reused
      const diverged = [...ids];
      diverged[3 * CHUNK + 5] = (diverged[3 * CHUNK + 5]! + 1) % 32000;
      expect(await store.match(diverged, cache)).toEqual({ length: 3 * CHUNK, kind: 'plain' });
      // a prompt shorter than the tail entry
      expect(await store.match(ids.slice(0, n - 1), cache)).toEqual({ length: 5 * CHUNK, kind: 'plain' });
      expect(await store.match(ids.slice(0, CHUNK - 1), cache)).toEqual({ length: 0, kind: null });

      for (const [prompt, length] of [[ids, n], [diverged, 3 * CHUNK], [ids.slice(0, 2 * CHUNK + 3), 2 * CHUNK]] as const) {
        const loaded = await store.load(prompt, cache);
        expect(loaded, `load ${length}`).not.toBeNull();
        expect(loaded!.length).toBe(length);
        expect(loaded!.kind).toBe('plain');
        expect(Buffer.from(loaded!.sequence.export()).equals(Buffer.from(prefixExport(seq, length))), `bytes of ${length} tokens`).toBe(true);
        loaded!.sequence.free();
      }
      const withMeta = (await store.load(ids, cache))!;
      expect(withMeta.meta).toEqual({ doc: 'A' });
      // freed here, not by the garbage collector at a moment that would change another test's count
      withMeta.sequence.free();
      const stats = await store.stats();
      expect(stats).toMatchObject({ backend: name.replace(/,.*/, ''), corrupt: 0, errors: 0, timeouts: 0 });
      expect(stats.hits).toBeGreaterThan(0);
      seq.free();
      await store.close();
    });

    it('compacted sequences are whole entries: found only for prompts that contain all of them', async () => {
      const { store } = await open('compacted');
      const rng = testRng(`compacted-${name}`);
      const n = 3 * CHUNK + 5;
      const ids = tokenIds(rng, n);
      const seq = plainSequence(cache, rng, n);
      const plainBytes = seq.export();
      await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 4 }, queries: 'keys', threads: 1 }).compact(seq);
      expect(seq.length(0, 0)).toBeLessThan(n);
      expect(await store.put(ids, seq)).toMatchObject({ kind: 'compacted', length: n, entriesWritten: 1 });
      expect(await store.match(ids, cache)).toEqual({ length: n, kind: 'compacted' });
      expect(await store.match([...ids, 7], cache)).toEqual({ length: n, kind: 'compacted' });
      expect(await store.match(ids.slice(0, n - 1), cache), 'a compacted entry has no shorter prefixes').toEqual({ length: 0, kind: null });
      const loaded = await store.load([...ids, 9, 9], cache);
      expect(loaded).toMatchObject({ length: n, kind: 'compacted' });
      expect(Buffer.from(loaded!.sequence.export()).equals(Buffer.from(seq.export()))).toBe(true);
      expect(loaded!.sequence.nextPosition(0)).toBe(n);
      loaded!.sequence.free();

      // The same document stored plain too: on a tie the compacted entry wins by default,
      // the plain one with prefer: 'plain'.
      const plain = cache.importSequence(plainBytes);
      await store.put(ids, plain);
      expect(await store.match(ids, cache)).toEqual({ length: n, kind: 'compacted' });
      await store.delete(ids, cache);
      expect(await store.match(ids, cache)).toEqual({ length: 0, kind: null });
      plain.free();
      seq.free();
      await store.close();
    });

    it('a cache with another configuration or another model never sees the entries', async () => {
      const { store } = await open('config');
      const rng = testRng(`config-${name}`);
      const ids = tokenIds(rng, 2 * CHUNK);
      const seq = plainSequence(cache, rng, ids.length);
      await store.put(ids, seq);
      expect((await store.match(ids, cache)).length).toBe(2 * CHUNK);
      for (const settings of [{ values: 'int8' as const }, { rotate: false }, { rotationSeed: 7 }, { groupSize: 16 }, { layers: 4 }, { kvHeads: 1, queryHeads: 2 }]) {
        const other = makeCache(settings);
        expect(await store.match(ids, other), JSON.stringify(settings)).toEqual({ length: 0, kind: null });
        expect(await store.load(ids, other)).toBeNull();
        other.dispose();
      }
      seq.free();
      await store.close();
    });

    it('a damaged entry is deleted and is a miss; nothing is imported', async () => {
      const rng = testRng(`damage-${name}`);
      const ids = tokenIds(rng, 2 * CHUNK);
      const seq = plainSequence(cache, rng, ids.length);
      const errors: Error[] = [];
      const { store, backend } = await open('damage', errors);
      await store.put(ids, seq);
      // Damage one stored chunk as a disk, another writer or a bad link would.
      const key = chunkKey(chainHashes(fingerprint('test-model', cache.config, CHUNK), Uint32Array.from(ids), CHUNK), 2);
      const [value] = await backend.get([key]);
      expect(value).not.toBeNull();
      const bad = new Uint8Array(Parts.of(value!).contiguous());
      bad[Math.floor(bad.length / 2)]! ^= 0x10;
      await backend.delete([key]);
      expect(await backend.putIfAbsent(key, bad)).toBe(true);
      const before = cache.stats().sequences;
      expect(await store.load(ids, cache)).toBeNull();
      expect(cache.stats().sequences, 'no sequence was created').toBe(before);
      expect((await store.stats()).corrupt).toBe(1);
      expect(errors.some((e) => e instanceof KVCacheError && e.code === 'CORRUPT_DATA')).toBe(true);
      // deleted: the chain now ends before the damaged chunk
      expect((await backend.has([key]))[0]).toBe(false);
      seq.free();
      await store.close();
    });
  });
}


describe('PrefixStore (redis, scripting refused)', () => {
  it('lookups switch to pipelined commands and find the same prefixes', async () => {
    const cache = makeCache();
    try {
      const backend = new RedisBackend({ url: await noScriptingUser(), prefix: uniquePrefix('noscript'), partBytes: 1000, ttlSeconds: 600, timeoutMs: 2000 });
      const { store } = opened(backend);
      const rng = testRng('noscript');
      const n = 3 * CHUNK + 5;
      const ids = tokenIds(rng, n);
      expect(backend.lookupByScript).toBe(true);
      await store.put(ids, plainSequence(cache, rng, n));
      expect(await store.match(ids, cache)).toEqual({ length: n, kind: 'plain' });
      expect(await store.match(ids.slice(0, 2 * CHUNK + 1), cache)).toEqual({ length: 2 * CHUNK, kind: 'plain' });
      expect(backend.lookupByScript).toBe(false);
      await store.close();
    } finally {
      cache.dispose();
    }
  });
});
