// The incremental import a PrefixStore load uses for plain prefixes (lib/prefix-store/
// chunk-import.ts over cpp/core/chunk_import.cpp): chunk entries of random sizes (crossing
// block boundaries), fed in order and shuffled, give a sequence bit-identical to a one-shot
// importSequence of the export; a damaged entry (a flipped bit anywhere, or rows that fail the
// import's checks under a valid checksum) fails with a typed error and leaves the cache as it
// was; abort, dispose and misuse are typed and leak no blocks.
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, it } from 'vitest';

import { KVCacheError, PrefixStore, type KVCache } from '../../lib/index';
import type { StoreBackend } from '../../lib/prefix-store/backend';
import { ChunkImporter } from '../../lib/prefix-store/chunk-import';
import { encodeEntry, readEntryFrame } from '../../lib/prefix-store/entry';
import { chunkPayload, preludeBytes, readExportLayout } from '../../lib/prefix-store/export-layout';
import { MemoryBackend } from '../../lib/prefix-store/memory-backend';
import { native } from '../../lib/native/binding';
import { normalsFrom, testRng, type Rng } from '../reference/random';
import { makeCache, plainSequence, tokenIds } from './support';

/** Random chunk sizes adding up to `total` (1..maxRows each). */
function randomRows(rng: Rng, total: number, maxRows: number): number[] {
  const rows: number[] = [];
  for (let left = total; left > 0;) {
    const r = Math.min(left, rng.int(1, maxRows));
    rows.push(r);
    left -= r;
  }
  return rows;
}

/** The chunk entries of a plain export, as PrefixStore.put frames them. */
function chunkFrames(bytes: Uint8Array, rows: number[]): Uint8Array[] {
  const layout = readExportLayout(bytes)!;
  let start = 0;
  return rows.map((r, j) => {
    const payload = chunkPayload(bytes, layout, start, r);
    start += r;
    return encodeEntry({ kind: j === rows.length - 1 ? 'tail' : 'chunk', tokens: start, rows: r, meta: { j }, payload });
  });
}

function add(importer: ChunkImporter, j: number, frame: Uint8Array): void {
  const f = readEntryFrame(frame)!;
  importer.add(j, frame, f.payloadAt, preludeBytes(frame.subarray(f.payloadAt, f.payloadAt + f.payloadBytes)));
}

function shuffled(rng: Rng, n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const k = rng.int(0, i);
    [order[i], order[k]] = [order[k]!, order[i]!];
  }
  return order;
}

function held(cache: KVCache) {
  const s = cache.stats();
  return { sequences: s.sequences, blocksUsed: s.blocksUsed, blocksFree: s.blocksFree };
}

function expectCode(fn: () => unknown, code: string): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error, `expected ${code}`).toBeInstanceOf(KVCacheError);
  expect((error as KVCacheError).code).toBe(code);
}

const CONFIGS = {
  'int8 keys, int4 values, rotated': {},
  'f32 rows': { keys: 'f32', values: 'f32', rotate: false },
  'f16 keys, int8 values': { keys: 'f16', values: 'int8', rotate: false },
  'bf16 rows with rope': { keys: 'bf16', values: 'bf16', rotate: false, rope: { theta: 10000 } },
} as const;

describe('ChunkImporter', () => {
  for (const [name, settings] of Object.entries(CONFIGS)) {
    it(`${name}: random chunk sizes, in order and shuffled, bit-identical to a one-shot import`, () => {
      const rng = testRng();
      const cache = makeCache(settings as object);
      const tokens = rng.int(100, 200);
      const source = plainSequence(cache, rng, tokens);
      const bytes = source.export();
      const oneShot = cache.importSequence(bytes);
      const want = Buffer.from(oneShot.export());
      expect(want.equals(Buffer.from(bytes))).toBe(true);
      for (const order of ['in order', 'shuffled']) {
        const rows = randomRows(rng, tokens, 40);
        const frames = chunkFrames(bytes, rows);
        const before = held(cache);
        const importer = new ChunkImporter(cache, rows);
        for (const j of order === 'in order' ? frames.map((_, j) => j) : shuffled(rng, frames.length)) add(importer, j, frames[j]!);
        const seq = importer.finish();
        expect(held(cache).sequences).toBe(before.sequences + 1);
        expect(Buffer.from(seq.export()).equals(want), `${order}: ${rows.join(',')}`).toBe(true);
        expect(seq.nextPosition(0)).toBe(tokens);
        // The same attention output as the one-shot import (what a continued request sees).
        const q = normalsFrom(rng)(cache.config.queryHeads * cache.config.headDim);
        expect(Array.from(seq.attention(1, q))).toEqual(Array.from(oneShot.attention(1, q)));
        seq.free();
        importer.abort(); // after finish: nothing
      }
      oneShot.free();
      source.free();
      cache.dispose();
    });
  }

  it('a cache with tiers takes the chunks of an untiered export into its top tier and ages them, as importSequence does', () => {
    const rng = testRng();
    const formats = { keys: 'int8', values: 'int8', rotate: false } as const;
    const plain = makeCache(formats);
    const tiered = makeCache({ ...formats, tiers: [{ rows: 48, keys: 'int8', values: 'int8' }, { keys: 'int8', values: 'int4' }] });
    const source = plainSequence(plain, rng, 150);
    const bytes = source.export();
    const oneShot = tiered.importSequence(bytes);
    const rows = randomRows(rng, 150, 40);
    const importer = new ChunkImporter(tiered, rows);
    chunkFrames(bytes, rows).forEach((frame, j) => add(importer, j, frame));
    const seq = importer.finish();
    expect(Buffer.from(seq.export()).equals(Buffer.from(oneShot.export()))).toBe(true);
    expect(tiered.stats().tiers).toBeDefined();
    seq.free();
    oneShot.free();
    source.free();
    plain.dispose();
    tiered.dispose();
  });

  it('a flipped bit anywhere in an entry fails the import with CORRUPT_DATA and leaves the cache as it was', () => {
    const rng = testRng();
    const cache = makeCache();
    const source = plainSequence(cache, rng, 120);
    const bytes = source.export();
    const rows = randomRows(rng, 120, 30);
    for (let trial = 0; trial < 12; trial++) {
      const frames = chunkFrames(bytes, rows);
      const victim = rng.int(0, frames.length - 1);
      const frame = frames[victim]!;
      // Anywhere: the framing, the meta, the prelude, the rows or the stored CRC itself.
      const at = trial === 0 ? frame.length - 1 : rng.int(0, frame.length - 1);
      frame[at]! ^= 1 << rng.int(0, 7);
      const before = held(cache);
      const importer = new ChunkImporter(cache, rows);
      let failedAt = -1;
      for (let j = 0; j < frames.length && failedAt < 0; j++) {
        const f = readEntryFrame(frames[j]!);
        if (!f) {
          failedAt = j; // the framing itself no longer parses: the store counts it damaged without the import
          importer.abort();
          break;
        }
        try {
          importer.add(j, frames[j]!, f.payloadAt, Math.max(0, preludeBytes(frames[j]!.subarray(f.payloadAt, f.payloadAt + f.payloadBytes))));
        } catch (e) {
          expect(e).toBeInstanceOf(KVCacheError);
          expect(['CORRUPT_DATA', 'INVALID_ARGUMENT', 'SHAPE_MISMATCH']).toContain((e as KVCacheError).code);
          failedAt = j;
        }
      }
      expect(failedAt, `byte ${at} of entry ${victim}`).toBe(victim);
      expect(held(cache)).toEqual({ ...before, blocksUsed: before.blocksUsed });
      expect(() => importer.finish()).toThrow();
      expect(held(cache)).toEqual(before);
    }
    source.free();
    cache.dispose();
  });

  it('rows that fail the import checks under a valid checksum: CORRUPT_DATA, nothing kept', () => {
    const rng = testRng();
    const cache = makeCache({ keys: 'f32', values: 'f32', rotate: false });
    const source = plainSequence(cache, rng, 64);
    const bytes = source.export();
    const rows = [20, 20, 24];
    const frames = chunkFrames(bytes, rows);
    // A NaN key element in the second chunk, the entry's CRC recomputed: only the row checks see it.
    const f = readEntryFrame(frames[1]!)!;
    const prelude = preludeBytes(frames[1]!.subarray(f.payloadAt));
    const view = new DataView(frames[1]!.buffer, frames[1]!.byteOffset);
    view.setFloat32(f.payloadAt + prelude + 4 * 5, NaN, true);
    view.setUint32(frames[1]!.length - 4, native().crc32(frames[1]!.subarray(0, frames[1]!.length - 4), 0), true);
    const before = held(cache);
    const importer = new ChunkImporter(cache, rows);
    add(importer, 0, frames[0]!);
    expectCode(() => add(importer, 1, frames[1]!), 'CORRUPT_DATA');
    expect(held(cache)).toEqual(before);
    source.free();
    cache.dispose();
  });

  it('abort, dispose and misuse: typed errors, no blocks left behind', () => {
    const rng = testRng();
    const cache = makeCache();
    const source = plainSequence(cache, rng, 96);
    const bytes = source.export();
    const rows = [32, 32, 32];
    const frames = chunkFrames(bytes, rows);
    const before = held(cache);
    // Abandoned half-way.
    const half = new ChunkImporter(cache, rows);
    add(half, 0, frames[0]!);
    expect(held(cache).blocksUsed).toBeGreaterThan(before.blocksUsed); // the whole sequence's blocks, taken at the first chunk
    half.abort();
    expect(held(cache)).toEqual(before);
    // Finished before every chunk came: INVALID_ARGUMENT, then abort gives the blocks back.
    const early = new ChunkImporter(cache, rows);
    add(early, 0, frames[0]!);
    add(early, 2, frames[2]!);
    expectCode(() => early.finish(), 'INVALID_ARGUMENT');
    early.abort();
    expect(held(cache)).toEqual(before);
    // The same chunk twice, and a chunk whose rows disagree with the plan.
    const twice = new ChunkImporter(cache, rows);
    add(twice, 0, frames[0]!);
    expectCode(() => add(twice, 0, frames[0]!), 'INVALID_ARGUMENT');
    expect(held(cache)).toEqual(before);
    const misfit = new ChunkImporter(cache, [32, 31, 33]);
    add(misfit, 0, frames[0]!);
    expectCode(() => add(misfit, 1, frames[1]!), 'CORRUPT_DATA');
    expect(held(cache)).toEqual(before);
    // A chunk of a cache configured otherwise: refused before any block is taken.
    const other = makeCache({ keys: 'f16', values: 'f16', rotate: false });
    const foreign = chunkFrames(plainSequence(other, rng, 32).export(), [32]);
    expectCode(() => add(new ChunkImporter(cache, [32]), 0, foreign[0]!), 'INVALID_ARGUMENT');
    expect(held(cache)).toEqual(before);
    other.dispose();
    // More rows than the cache can hold (36 blocks needed, 20 allowed): OUT_OF_MEMORY, nothing taken.
    const small = makeCache({ maxBytes: 20 * cache.stats().blockBytes });
    expectCode(() => add(new ChunkImporter(small, [32, 32, 32]), 0, frames[0]!), 'OUT_OF_MEMORY');
    expect(small.stats().blocksUsed).toBe(0);
    small.dispose();
    // The cache disposed mid-import: later calls are DISPOSED, abort is harmless.
    const orphan = new ChunkImporter(cache, rows);
    add(orphan, 0, frames[0]!);
    source.free();
    cache.dispose();
    expectCode(() => add(orphan, 1, frames[1]!), 'DISPOSED');
    expect(() => orphan.abort()).not.toThrow();
  });

  it('an import dropped without finish or abort gives its blocks back when collected; one of a disposed cache is harmless', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const rng = testRng();
    const cache = makeCache();
    const source = plainSequence(cache, rng, 64);
    const frames = chunkFrames(source.export(), [32, 32]);
    const before = held(cache);
    (() => add(new ChunkImporter(cache, [32, 32]), 0, frames[0]!))();
    expect(held(cache).blocksUsed).toBeGreaterThan(before.blocksUsed);
    for (let i = 0; i < 5 && held(cache).blocksUsed !== before.blocksUsed; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10)); // finalizers run after the collection
    }
    expect(held(cache)).toEqual(before);
    const other = makeCache();
    (() => add(new ChunkImporter(other, [32, 32]), 0, frames[0]!))();
    other.dispose();
    gc();
    await new Promise((r) => setTimeout(r, 10));
    gc();
    source.free();
    cache.dispose();
  });

  it('a store load with a damaged entry is a miss that leaves the cache as it was', async () => {
    const rng = testRng();
    {
      const cache = makeCache();
      const tokens = 256 * 3 + 17;
      const ids = tokenIds(rng, tokens);
      const source = plainSequence(cache, rng, tokens);
      // A memory backend that damages one byte of the third entry it hands out while `damage` is set.
      const inner = new MemoryBackend(1 << 30);
      let damage = false;
      const backend: StoreBackend = {
        name: 'memory',
        has: (keys) => inner.has(keys),
        get: async (keys) => (await inner.get(keys)).map((v, i) => {
          if (!damage || i !== 2 || v === null) return v;
          const copy = Uint8Array.from(v);
          copy[rng.int(0, copy.length - 1)]! ^= 0x40;
          return copy;
        }),
        putIfAbsent: (key, value) => inner.putIfAbsent(key, value),
        delete: (keys) => inner.delete(keys),
        addMarker: (set, member, entry) => inner.addMarker(set, member, entry),
        markers: (sets) => inner.markers(sets),
        stats: () => inner.stats(),
        close: () => inner.close(),
      };
      const store = PrefixStore.fromBackend(backend, { chunkTokens: 256 });
      await store.put(ids, source);
      const want = Buffer.from(source.export());
      const loaded = await store.load(ids, cache);
      expect(Buffer.from(loaded!.sequence.export()).equals(want)).toBe(true);
      expect(loaded!.bytes).toBe(want.length);
      loaded!.sequence.free();
      const before = held(cache);
      damage = true;
      const missed = await store.load(ids, cache);
      expect(missed === null, 'a miss').toBe(true);
      expect(held(cache)).toEqual(before);
      expect((await store.stats()).corrupt).toBe(1);
      // Only the damaged entry was deleted: the prefix now ends before it.
      damage = false;
      expect((await store.match(ids, cache)).length).toBe(512);
      source.free();
      await store.close();
      cache.dispose();
    }
  });
});
