// Bounds and clean-up of the stores, and the load path that places entries as they arrive:
// the directory store's byte budget (least recently used entries go, with their markers) and
// time to live, two stores sweeping one directory while they read and write it, markers of
// evicted memory entries dropped with them, stale Redis markers removed by the lookup that
// finds them, chunks joined in any order, values handed over as they arrive over several
// connections, and a load over a unix socket.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';

import { Compactor, KVCache, PrefixStore, type Sequence } from '../../lib/index';
import { DirectoryBackend } from '../../lib/prefix-store/directory-backend';
import { chunkPayload, joinChunks, ChunkJoin, readExportLayout } from '../../lib/prefix-store/export-layout';
import { MemoryBackend } from '../../lib/prefix-store/memory-backend';
import { plainEndpoint, readBulk } from '../../lib/prefix-store/redis-bulk-read';
import { testRng, type Rng } from '../reference/random';
import { makeCache, plainSequence, sharedRedis, tempDir, tokenIds, uniquePrefix } from './support';

const CHUNK = 16;
const options = { chunkTokens: CHUNK, model: 'limits', timeoutMs: 5000 };

afterAll(async () => {
  const r = await sharedRedis().catch(() => undefined);
  await r?.stop();
});

/** A compacted sequence of n tokens (stored as one whole entry under a marker). */
async function compacted(cache: KVCache, rng: Rng, n: number): Promise<Sequence> {
  const seq = plainSequence(cache, rng, n);
  await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 4 }, queries: 'keys', threads: 1 }).compact(seq);
  return seq;
}

/** Every file under dir/sub (entries or markers), recursively. */
function files(dir: string, sub: string): string[] {
  const root = path.join(dir, sub);
  return (fs.readdirSync(root, { recursive: true }) as string[]).map((f) => path.join(root, f)).filter((f) => fs.statSync(f).isFile());
}

function setAge(file: string, secondsAgo: number): void {
  const t = new Date(Date.now() - 1000 * secondsAgo);
  fs.utimesSync(file, t, t);
}

describe('directory store: byte budget and time to live', () => {
  it('keeps the entries under maxBytes, removing the least recently used first, with their markers', async () => {
    const cache = makeCache();
    const rng = testRng('dir-budget');
    const dir = tempDir('dir-budget');
    const n = 2 * CHUNK + 3;
    const docs = await Promise.all([0, 1, 2, 3].map(async () => ({ ids: tokenIds(rng, n), seq: await compacted(cache, rng, n) })));
    const entryBytes = (await PrefixStore.memory(options).put(docs[0]!.ids, docs[0]!.seq))!.bytesWritten;
    // Room for three entries: the fourth put goes over and its sweep removes the oldest.
    const store = PrefixStore.directory(dir, { ...options, maxBytes: Math.floor(3.5 * entryBytes) });
    for (const [i, d] of docs.slice(0, 3).entries()) {
      await store.put(d.ids, d.seq);
      // Distinct ages: doc 0 written longest ago, doc 2 last.
      for (const f of files(dir, 'entries')) if (Date.now() - fs.statSync(f).mtimeMs < 5000) setAge(f, 100 - 10 * i);
    }
    // A load makes doc 0 the most recently used: doc 1 is now the oldest.
    const loaded = await store.load(docs[0]!.ids, cache);
    expect(loaded?.length).toBe(n);
    loaded!.sequence.free();
    await new Promise((r) => setTimeout(r, 50)); // the load's touch is in the background
    expect(files(dir, 'markers')).toHaveLength(3);
    await store.put(docs[3]!.ids, docs[3]!.seq);
    await store.close(); // waits for the sweep the put started
    const held = files(dir, 'entries');
    expect(held.reduce((s, f) => s + fs.statSync(f).size, 0)).toBeLessThanOrEqual(3.5 * entryBytes);
    const again = PrefixStore.directory(dir, { ...options, maxBytes: Math.floor(3.5 * entryBytes) });
    const found = await Promise.all(docs.map((d) => again.match(d.ids, cache)));
    expect(found.map((m) => m.length)).toEqual([n, 0, n, n]);
    // The removed entry's marker went with it: one marker per entry held.
    expect(files(dir, 'markers')).toHaveLength(held.length);
    // An entry larger than the whole budget is not stored.
    const tiny = PrefixStore.directory(tempDir('dir-tiny'), { ...options, maxBytes: 100 });
    expect(await tiny.put(docs[0]!.ids, docs[0]!.seq)).toMatchObject({ entriesWritten: 0 });
    expect(await tiny.match(docs[0]!.ids, cache)).toEqual({ length: 0, kind: null });
    await Promise.all([again.close(), tiny.close()]);
    docs.forEach((d) => d.seq.free());
    cache.dispose();
  });

  it('entries unused for ttlSeconds are misses, replaced by the next put, and swept', async () => {
    const cache = makeCache();
    const rng = testRng('dir-ttl');
    const dir = tempDir('dir-ttl');
    const store = PrefixStore.directory(dir, { ...options, ttlSeconds: 60 });
    const ids = tokenIds(rng, 3 * CHUNK);
    const seq = plainSequence(cache, rng, ids.length);
    expect(await store.put(ids, seq)).toMatchObject({ entriesWritten: 3 });
    expect(await store.match(ids, cache)).toEqual({ length: 3 * CHUNK, kind: 'plain' });
    // The second chunk was last used two minutes ago: the prefix stops before it.
    const second = files(dir, 'entries').sort((a, b) => fs.statSync(a).mtimeMs - fs.statSync(b).mtimeMs)[1]!;
    setAge(second, 120);
    const m = await store.match(ids, cache);
    expect([CHUNK, 0]).toContain(m.length); // which file is "second" depends on write order within a millisecond
    expect(await store.load(ids, cache).then((l) => l?.length ?? 0)).toBeLessThan(3 * CHUNK);
    // A put writes the expired entry again.
    expect((await store.put(ids, seq))!.entriesWritten).toBe(1);
    const loaded = await store.load(ids, cache);
    expect(Buffer.from(loaded!.sequence.export()).equals(Buffer.from(seq.export()))).toBe(true);
    loaded!.sequence.free();
    // A sweep removes what expired and temporary files a dead writer left.
    await new Promise((r) => setTimeout(r, 50)); // after the load's touch, which is in the background
    for (const f of files(dir, 'entries')) setAge(f, 120);
    const orphan = path.join(dir, 'tmp', 'x.1.dead');
    fs.writeFileSync(orphan, 'partial');
    setAge(orphan, 7200);
    await new DirectoryBackend(dir, { maxBytes: Infinity, ttlSeconds: 60 }).sweep();
    expect(files(dir, 'entries')).toHaveLength(0);
    expect(fs.existsSync(orphan)).toBe(false);
    await store.close();
    seq.free();
    cache.dispose();
  });

  it('two stores on one directory with a small budget: every load is bit-exact or a miss, nothing fails', async () => {
    const cache = makeCache();
    const rng = testRng('dir-two');
    const dir = tempDir('dir-two');
    const errors: Error[] = [];
    const docs = Array.from({ length: 8 }, () => ({ ids: tokenIds(rng, 4 * CHUNK + 2), seq: plainSequence(cache, rng, 4 * CHUNK + 2) }));
    const perDoc = (await PrefixStore.memory(options).put(docs[0]!.ids, docs[0]!.seq))!.bytesWritten;
    const open = () => PrefixStore.directory(dir, { ...options, maxBytes: 3 * perDoc, onError: (e) => errors.push(e) });
    const stores = [open(), open()];
    let hits = 0;
    for (let round = 0; round < 3; round++) {
      await Promise.all(docs.map(async (d, i) => {
        const store = stores[(i + round) % 2]!;
        await store.put(d.ids, d.seq);
        const loaded = await stores[(i + round + 1) % 2]!.load(d.ids, cache);
        if (!loaded) return;
        hits++;
        const want = d.seq.fork();
        want.truncate(loaded.length);
        expect(Buffer.from(loaded.sequence.export()).equals(Buffer.from(want.export()))).toBe(true);
        want.free();
        loaded.sequence.free();
      }));
    }
    await Promise.all(stores.map((s) => s.close()));
    await new DirectoryBackend(dir, { maxBytes: 3 * perDoc, ttlSeconds: 0 }).sweep();
    expect(files(dir, 'entries').reduce((s, f) => s + fs.statSync(f).size, 0)).toBeLessThanOrEqual(3 * perDoc);
    expect(errors).toEqual([]);
    expect(hits).toBeGreaterThan(0);
    docs.forEach((d) => d.seq.free());
    cache.dispose();
  });
});

describe('option checks', () => {
  it('maxBytes, ttlSeconds and loadConnections outside their ranges are INVALID_ARGUMENT', () => {
    const dir = tempDir('dir-options');
    for (const bad of [0, -1, 1.5, Number.NaN, '10']) {
      expect(() => PrefixStore.directory(dir, { maxBytes: bad as number }), `maxBytes ${String(bad)}`).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
      expect(() => PrefixStore.redis({ loadConnections: bad as number }), `loadConnections ${String(bad)}`).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    for (const bad of [-1, 1.5, '60']) {
      expect(() => PrefixStore.directory(dir, { ttlSeconds: bad as number }), `ttlSeconds ${String(bad)}`).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    expect(() => PrefixStore.redis({ loadConnections: 65 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('markers of entries that are gone', () => {
  it('memory: markers leave with the entries the budget evicts', async () => {
    const cache = makeCache();
    const rng = testRng('mem-markers');
    const backend = new MemoryBackend(1);
    const n = 2 * CHUNK + 1;
    const docs = await Promise.all([0, 1, 2, 3, 4, 5].map(async () => ({ ids: tokenIds(rng, n), seq: await compacted(cache, rng, n) })));
    const entryBytes = (await PrefixStore.memory(options).put(docs[0]!.ids, docs[0]!.seq))!.bytesWritten;
    const sized = new MemoryBackend(2 * entryBytes + 10);
    const store = PrefixStore.fromBackend(sized, options);
    for (const d of docs) await store.put(d.ids, d.seq);
    expect((await store.stats()).entries).toBe(2);
    expect(sized.markerSets).toBe(2);
    expect((await store.match(docs[5]!.ids, cache)).length).toBe(n);
    expect((await store.match(docs[0]!.ids, cache)).length).toBe(0);
    await store.delete(docs[5]!.ids, cache);
    expect(sized.markerSets).toBe(1);
    // An entry refused as too large leaves no marker.
    const none = PrefixStore.fromBackend(backend, options);
    await none.put(docs[0]!.ids, docs[0]!.seq);
    expect(backend.markerSets).toBe(0);
    docs.forEach((d) => d.seq.free());
    cache.dispose();
  });

  it('redis: a lookup that finds a marker without its entry removes the marker', async () => {
    const cache = makeCache();
    const rng = testRng('redis-markers');
    const url = (await sharedRedis()).url;
    const keyPrefix = uniquePrefix('markers');
    const store = PrefixStore.redis({ ...options, url, keyPrefix, ttlSeconds: 600 });
    const n = 2 * CHUNK + 1;
    const ids = tokenIds(rng, n);
    const seq = await compacted(cache, rng, n);
    await store.put(ids, seq);
    const client = new Redis(url);
    const sets = await client.keys(`${keyPrefix}m*`);
    expect(sets.length).toBe(1);
    // The server dropped the entry (maxmemory, TTL) but kept its marker.
    await client.del(...(await client.keys(`${keyPrefix}e:*`)));
    expect(await store.match(ids, cache)).toEqual({ length: 0, kind: null });
    await new Promise((r) => setTimeout(r, 100)); // the removal is not awaited by the lookup
    expect(await client.scard(sets[0]!)).toBe(0);
    await client.quit();
    await store.close();
    seq.free();
    cache.dispose();
  });
});

describe('entries placed as they arrive', () => {
  it('chunks joined in any order give the bytes of the in-order join; a chunk that does not fit gives null', () => {
    const cache = makeCache();
    const rng = testRng('join-order');
    const n = 4 * CHUNK + 7;
    const seq = plainSequence(cache, rng, n);
    const bytes = seq.export();
    const layout = readExportLayout(bytes)!;
    const rows = [CHUNK, CHUNK, CHUNK, CHUNK, 7];
    const payloads = rows.map((r, j) => chunkPayload(bytes, layout, j * CHUNK, r));
    const inOrder = joinChunks(payloads, rows)!;
    expect(Buffer.from(inOrder).equals(Buffer.from(bytes))).toBe(true);
    for (const order of [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3]]) {
      const join = new ChunkJoin(rows);
      for (const j of order) expect(join.add(j, payloads[j]!)).toBe(true);
      expect(Buffer.from(join.finish()!).equals(Buffer.from(bytes)), order.join()).toBe(true);
    }
    const missing = new ChunkJoin(rows);
    [0, 1, 2, 4].forEach((j) => missing.add(j, payloads[j]!));
    expect(missing.finish()).toBeNull();
    const swapped = new ChunkJoin(rows);
    expect(swapped.add(4, payloads[3]!)).toBe(false); // 16 rows where 7 belong
    expect(swapped.finish()).toBeNull();
    seq.free();
    cache.dispose();
  });

  it('readBulk over several connections hands every value over once, as it completes; a throwing handler fails the read', async () => {
    const rng = testRng('bulk-connections');
    const url = (await sharedRedis()).url;
    const client = new Redis(url);
    const prefix = uniquePrefix('bulk-conn');
    const values = Array.from({ length: 7 }, (_, i) => Buffer.from(Array.from({ length: 50_000 + 1000 * i }, () => rng.int(0, 255))));
    await Promise.all(values.map((v, i) => client.set(`${prefix}${i}`, v)));
    const requests = values.map((v, i) => ({ keys: [`${prefix}${i}`], bytes: v.length }));
    for (const connections of [1, 3, 10]) {
      const seen: number[] = [];
      const got = await readBulk(plainEndpoint(url)!, requests, 10_000, {
        connections,
        onValue: (i, v) => {
          seen.push(i);
          expect(Buffer.from(v).equals(values[i]!), `value ${i} over ${connections}`).toBe(true);
        },
      });
      expect([...seen].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6]);
      got.forEach((g, i) => expect(Buffer.from(g).equals(values[i]!)).toBe(true));
    }
    await expect(readBulk(plainEndpoint(url)!, requests, 10_000, { connections: 2, onValue: () => { throw new Error('handler failed'); } })).rejects.toThrow('handler failed');
    await client.del(...requests.map((r) => r.keys[0]!));
    await client.quit();
  });

  it('a load over a unix socket (a local server without TCP) is bit-exact', async () => {
    expect(spawnSync('redis-server', ['--version']).status).toBe(0);
    const dir = tempDir('unix');
    const sock = path.join(dir, 'redis.sock');
    const child = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
      expect(plainEndpoint(sock)).toEqual({ host: '', port: 0, path: sock, db: 0 });
      const rng = testRng('unix');
      // 4 layers x 2 heads x f32 rows of 64: 4.2 MB for 1024 tokens, past the bulk reader's threshold.
      const cache = makeCache({ layers: 4, kvHeads: 2, headDim: 64, queryHeads: 4, keys: 'f32', values: 'f32', rotate: false, maxBytes: 128 << 20 });
      const ids = tokenIds(rng, 1024);
      const seq = plainSequence(cache, rng, ids.length);
      const store = PrefixStore.redis({ ...options, chunkTokens: 256, url: sock, partBytes: 1 << 20, loadConnections: 3 });
      expect(await store.put(ids, seq)).toMatchObject({ kind: 'plain', entriesWritten: 4 });
      const loaded = await store.load(ids, cache);
      expect(loaded!.bytes).toBeGreaterThanOrEqual(4 << 20);
      expect(Buffer.from(loaded!.sequence.export()).equals(Buffer.from(seq.export()))).toBe(true);
      loaded!.sequence.free();
      expect(await store.stats()).toMatchObject({ corrupt: 0, errors: 0, timeouts: 0 });
      await store.close();
      seq.free();
      cache.dispose();
    } finally {
      child.kill('SIGKILL');
    }
  }, 30_000);
});
