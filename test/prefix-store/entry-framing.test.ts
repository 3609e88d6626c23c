// Entry framing and the export layout read in TypeScript: every single-bit flip and every
// truncation of an entry is rejected; chunk payloads of a plain export join back into the
// exact export of any chunk-aligned prefix (and of the whole sequence with its tail).
import { describe, expect, it } from 'vitest';
import { decodeEntry, encodeEntry } from '../../lib/prefix-store/entry';
import { Parts } from '../../lib/prefix-store/parts';
import { chunkPayload, isPlainPrefix, joinChunks, readExportLayout } from '../../lib/prefix-store/export-layout';
import { testRng } from '../reference/random';
import { makeCache, plainSequence, prefixExport } from './support';

describe('entry framing', () => {
  it('round trips and rejects every bit flip and truncation', () => {
    const rng = testRng('frame');
    const payload = Uint8Array.from({ length: 300 }, () => rng.int(0, 255));
    const frame = encodeEntry({ kind: 'tail', tokens: 77, rows: 13, meta: { doc: 'x', n: 1 }, payload });
    const back = decodeEntry(frame)!;
    expect(back).toMatchObject({ kind: 'tail', tokens: 77, rows: 13, meta: { doc: 'x', n: 1 } });
    expect(Buffer.from(back.payload.contiguous()).equals(Buffer.from(payload))).toBe(true);
    // the same frame read back in parts (as Redis returns a value split into bounded parts)
    for (const cuts of [[1], [7, 33], [40, 41, 200], [frame.length - 2]]) {
      const pieces: Uint8Array[] = [];
      let last = 0;
      for (const c of [...cuts, frame.length]) (pieces.push(frame.subarray(last, c)), (last = c));
      const split = decodeEntry(new Parts(pieces))!;
      expect(split, `cut at ${cuts}`).not.toBeNull();
      expect(Buffer.from(split.payload.contiguous()).equals(Buffer.from(payload))).toBe(true);
      const bad = pieces.map((p) => new Uint8Array(p));
      bad[bad.length - 1]![0]! ^= 0x40;
      expect(decodeEntry(new Parts(bad)), `flip in the last part, cut at ${cuts}`).toBeNull();
    }
    for (let byte = 0; byte < frame.length; byte++) {
      for (const bit of [0, 5]) {
        const bad = new Uint8Array(frame);
        bad[byte]! ^= 1 << bit;
        expect(decodeEntry(bad), `flip byte ${byte} bit ${bit}`).toBeNull();
      }
    }
    for (const cut of [0, 1, 31, 36, frame.length - 1]) expect(decodeEntry(frame.subarray(0, cut)), `cut ${cut}`).toBeNull();
    expect(decodeEntry(new Uint8Array([...frame, 0])), 'one byte too many').toBeNull();
  });
});

describe('export layout', () => {
  for (const settings of [{ keys: 'f32', values: 'f16', rotate: false }, { keys: 'int8', values: 'int4', rotate: true }] as const) {
    it(`chunks join into the export of every prefix (${settings.keys}/${settings.values})`, () => {
      const cache = makeCache(settings);
      const rng = testRng(`layout-${settings.keys}`);
      const n = 45;
      const seq = plainSequence(cache, rng, n);
      const bytes = seq.export();
      const layout = readExportLayout(bytes)!;
      expect(layout).not.toBeNull();
      expect(Array.from(layout.lengths)).toEqual(new Array(cache.config.layers * cache.config.kvHeads).fill(n));
      expect(isPlainPrefix(bytes, layout, n)).toBe(true);
      expect(isPlainPrefix(bytes, layout, n - 1)).toBe(false);
      const chunk = 10;
      const payloads: Uint8Array[] = [];
      const rows: number[] = [];
      for (let start = 0; start < n; start += chunk) {
        const r = Math.min(chunk, n - start);
        payloads.push(chunkPayload(bytes, layout, start, r));
        rows.push(r);
      }
      // each payload also as a view into three parts, cut at odd places
      const split = payloads.map((p) => {
        const a = Math.floor(p.length / 3) + 1, b = Math.floor((2 * p.length) / 3) + 3;
        return new Parts([new Uint8Array(5), p.subarray(0, a), p.subarray(a, b), p.subarray(b)]).slice(5, 5 + p.length);
      });
      for (let k = 1; k <= payloads.length; k++) {
        const joined = joinChunks(payloads.slice(0, k), rows.slice(0, k))!;
        expect(Buffer.from(joinChunks(split.slice(0, k), rows.slice(0, k))!).equals(Buffer.from(joined)), 'joined from parts').toBe(true);
        const upTo = rows.slice(0, k).reduce((a, b) => a + b, 0);
        expect(Buffer.from(joined).equals(Buffer.from(prefixExport(seq, upTo))), `${upTo} tokens`).toBe(true);
        cache.importSequence(joined).free();
      }
      // payloads that do not fit together
      expect(joinChunks(payloads.slice(0, 2), [chunk, chunk - 1])).toBeNull();
      expect(readExportLayout(bytes.subarray(0, bytes.length - 1))).toBeNull();
      // an evicted sequence is not plain
      const fork = seq.fork();
      fork.truncate(n - 3);
      const evictedBytes = fork.export();
      expect(isPlainPrefix(evictedBytes, readExportLayout(evictedBytes)!, n)).toBe(false);
      cache.dispose();
    });
  }
});
