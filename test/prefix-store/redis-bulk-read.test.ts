// The reader PrefixStore uses for large Redis loads (values read straight into buffers sized
// in advance): exact bytes for values of every size class, damaged requests (missing parts,
// parts longer or shorter than announced) turned into empty values without disturbing the
// requests around them, error replies and dead servers as failures, and whole loads of
// multi-megabyte prefixes through PrefixStore, bit-exact, repeated (the kept buffers are
// reused) and with a corrupted part (a miss, the entry deleted).
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { PrefixStore } from '../../lib/index';
import { plainEndpoint, readBulk } from '../../lib/prefix-store/redis-bulk-read';
import { testRng } from '../reference/random';
import { makeCache, plainSequence, sharedRedis, tokenIds, uniquePrefix } from './support';

let url = '';
let client: Redis;

beforeAll(async () => {
  url = (await sharedRedis()).url;
  client = new Redis(url);
});

afterAll(async () => {
  await client?.quit();
});

function randomBuffer(rng: ReturnType<typeof testRng>, n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(0, 255);
  return out;
}

describe('plainEndpoint', () => {
  it('reads host, port, credentials and database, and declines what it cannot serve', () => {
    expect(plainEndpoint('redis://127.0.0.1:6390')).toEqual({ host: '127.0.0.1', port: 6390, username: undefined, password: undefined, db: 0 });
    expect(plainEndpoint('redis://u%40x:p%3Aw@localhost/3')).toEqual({ host: 'localhost', port: 6379, username: 'u@x', password: 'p:w', db: 3 });
    expect(plainEndpoint('redis://:secret@[::1]:7000')).toMatchObject({ host: '::1', port: 7000, password: 'secret', username: undefined });
    for (const bad of ['rediss://127.0.0.1', 'redis://h/x', 'redis://h/?family=6', 'not a url']) expect(plainEndpoint(bad), bad).toBeNull();
  });
});

describe('readBulk against Redis', () => {
  it('reads values of every size class exactly, pipelined, each into its own range', async () => {
    const rng = testRng();
    const prefix = uniquePrefix('bulk');
    const sizes = [[0], [1], [5, 7], [16 * 1024 - 1, 1, 16 * 1024 + 3], [700_000], [3_000_001, 2_000_000]];
    const values = sizes.map((parts) => parts.map((n) => randomBuffer(rng, n)));
    const pipe = client.pipeline();
    values.forEach((parts, i) => parts.forEach((p, j) => pipe.set(`${prefix}${i}:${j}`, p)));
    await pipe.exec();
    const requests = values.map((parts, i) => ({ keys: parts.map((_, j) => `${prefix}${i}:${j}`), bytes: parts.reduce((s, p) => s + p.length, 0) }));
    for (let round = 0; round < 2; round++) {
      const kept = Buffer.alloc(requests.reduce((s, r) => s + r.bytes, 0) + 5, 0xee);
      const got = await readBulk(plainEndpoint(url)!, requests, 10_000, round === 0 ? {} : { allocate: (n) => kept.subarray(0, n) });
      got.forEach((g, i) => expect(Buffer.from(g).equals(Buffer.concat(values[i]!)), `value ${i} (round ${round})`).toBe(true));
      if (round === 1) expect(got[5]!.buffer).toBe(kept.buffer); // read into the memory given
    }
    await client.del(...requests.flatMap((r) => r.keys));
  });

  it('reads in ranges of any size with any number in flight, over one or more connections', async () => {
    const rng = testRng();
    const prefix = uniquePrefix('bulk-ranges');
    // Parts shorter than, equal to and longer than a range, and empty parts between them.
    const sizes = [[999, 1000, 1001], [0, 2500, 0], [1], [40_000, 3]];
    const values = sizes.map((parts) => parts.map((n) => randomBuffer(rng, n)));
    const pipe = client.pipeline();
    values.forEach((parts, i) => parts.forEach((p, j) => pipe.set(`${prefix}${i}:${j}`, p)));
    await pipe.exec();
    const requests = values.map((parts, i) => ({ keys: parts.map((_, j) => `${prefix}${i}:${j}`), bytes: parts.reduce((s, p) => s + p.length, 0) }));
    for (const [rangeBytes, window, connections] of [[1000, 1, 1], [1000, 3, 2], [7, 64, 1], [1 << 20, 2, 3]] as const) {
      const order: number[] = [];
      const got = await readBulk(plainEndpoint(url)!, requests, 10_000, { rangeBytes, window, connections, onValue: (i) => order.push(i) });
      got.forEach((g, i) => expect(Buffer.from(g).equals(Buffer.concat(values[i]!)), `value ${i} (${rangeBytes} B x ${window}, ${connections})`).toBe(true));
      expect([...order].sort()).toEqual([0, 1, 2, 3]); // each value handed over once
    }
    await client.del(...requests.flatMap((r) => r.keys));
  });

  it('a missing part or parts that do not add up make that value empty, and only that one', async () => {
    const rng = testRng();
    const prefix = uniquePrefix('bulk-bad');
    const a = randomBuffer(rng, 300_000);
    const b = randomBuffer(rng, 200_000);
    await client.set(`${prefix}a`, a);
    await client.set(`${prefix}b`, b);
    const endpoint = plainEndpoint(url)!;
    const got = await readBulk(endpoint, [
      { keys: [`${prefix}a`], bytes: a.length },
      { keys: [`${prefix}a`, `${prefix}gone`], bytes: a.length + 10 }, // a part evicted
      { keys: [`${prefix}b`], bytes: b.length + 1 }, // shorter than announced
      { keys: [`${prefix}a`], bytes: a.length - 1 }, // longer than announced: read and dropped
      { keys: [`${prefix}b`], bytes: b.length },
    ], 10_000);
    expect(got.map((g) => g.length)).toEqual([a.length, 0, 0, 0, b.length]);
    expect(Buffer.from(got[0]!).equals(a)).toBe(true);
    expect(Buffer.from(got[4]!).equals(b)).toBe(true);
    await client.del(`${prefix}a`, `${prefix}b`);
  });

  it('an error reply, a wrong password and nothing listening reject', async () => {
    const prefix = uniquePrefix('bulk-err');
    await client.sadd(`${prefix}set`, 'x');
    await expect(readBulk({ ...plainEndpoint(url)!, db: 100000 }, [{ keys: [`${prefix}set`], bytes: 1 }], 2000)).rejects.toThrow(/redis: /);
    await expect(readBulk({ ...plainEndpoint(url)!, password: 'wrong' }, [{ keys: [`${prefix}set`], bytes: 1 }], 2000)).rejects.toThrow(/redis: /);
    await expect(readBulk(plainEndpoint('redis://127.0.0.1:1')!, [{ keys: ['k'], bytes: 1 }], 2000)).rejects.toThrow();
    await client.del(`${prefix}set`);
  });
});

describe('PrefixStore.redis loads of many megabytes (the bulk reader)', () => {
  it('loads bit-exact, again from the kept buffers, and treats a corrupted part as a miss', async () => {
    const rng = testRng();
    // f32 rows: 4 layers x 2 heads x (256 + 256 + 8) bytes per token, 2304 tokens = 9.6 MB in 9 chunk entries.
    const cache = makeCache({ layers: 4, kvHeads: 2, headDim: 64, queryHeads: 4, keys: 'f32', values: 'f32', rotate: false, maxBytes: 256 << 20 });
    const seq = plainSequence(cache, rng, 2304);
    const ids = tokenIds(rng, 2304);
    const keyPrefix = uniquePrefix('bulk-store');
    const store = PrefixStore.redis({ url, keyPrefix, partBytes: 1 << 20, ttlSeconds: 600, timeoutMs: 5000 });
    const put = await store.put(ids, seq);
    expect(put).toMatchObject({ kind: 'plain', length: 2304, entriesWritten: 9 });
    const want = Buffer.from(seq.export());
    for (let round = 0; round < 3; round++) {
      const loaded = await store.load(ids, cache);
      expect(loaded, `round ${round}`).not.toBeNull();
      expect(loaded!.bytes).toBeGreaterThanOrEqual(4 << 20);
      expect(Buffer.from(loaded!.sequence.export()).equals(want), `round ${round}: bit-exact`).toBe(true);
      loaded!.sequence.free();
    }
    // Damage one byte in the middle of a part of the fifth chunk entry.
    const keys = await client.keys(`${keyPrefix}p:*`);
    expect(keys.length).toBeGreaterThanOrEqual(9);
    const victim = keys.sort()[Math.floor(keys.length / 2)]!;
    const len = await client.strlen(victim);
    const at = Math.floor(len / 2);
    const byte = (await client.getrangeBuffer(victim, at, at))[0]!;
    await client.setrange(victim, at, Buffer.from([byte ^ 0x10]));
    expect(await store.load(ids, cache)).toBeNull();
    expect((await store.stats()).corrupt).toBe(1);
    // The damaged entry was deleted: the prefix now stops before it.
    const after = await store.match(ids, cache);
    expect(after.length).toBeLessThan(2304);
    expect(after.length % 256).toBe(0);
    await store.delete(ids, cache);
    await store.close();
    cache.dispose();
  }, 60_000);
});
