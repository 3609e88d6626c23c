// export / import: the imported sequence reads back bit-exactly (rows, beta, positions, lengths,
// nextPosition) in the same cache or in another cache of the same config, and is independent of
// the original afterwards.
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import type { PlainStorage } from '../reference/formats-reference';
import { positionsFrom, randn, testRng } from '../reference/random';
import { outputTol } from './attention-tolerance';
import { Shadow, type Shape, randomRows } from './helpers';

describe('export / import', () => {
  const formats: [PlainStorage, PlainStorage][] = [['f32', 'f32'], ['f16', 'f16'], ['bf16', 'f32'], ['f16', 'bf16']];
  for (const [keys, values] of formats) {
    it(`round trip bit-exact, keys ${keys} / values ${values}`, () => {
      const rng = testRng();
      const shape: Shape = { layers: 3, kvHeads: 2, headDim: 32, keys, values };
      const opts = { ...shape, queryHeads: 4, blockSize: 16, threads: 1 };
      const cache = new KVCache(opts);
      const seq = cache.createSequence();
      const sh = new Shadow(shape);
      // layers of different lengths, one empty, one with explicit gapped positions
      const r0 = randomRows(rng, shape, 37);
      seq.append(0, r0.keys, r0.values);
      sh.append(0, r0.keys, r0.values);
      const r2 = randomRows(rng, shape, 5);
      seq.append(2, r2.keys, r2.values, { positions: [3, 4, 9, 10, 70] });
      sh.append(2, r2.keys, r2.values, [3, 4, 9, 10, 70]);
      const bytes = seq.export();
      expect(bytes).toBeInstanceOf(Uint8Array);
      expect(seq.export(), 'export is deterministic').toEqual(bytes);

      const same = cache.importSequence(bytes);
      sh.expectMatches(same, 'imported into the same cache');
      const other = new KVCache(opts);
      const there = other.importSequence(bytes);
      sh.expectMatches(there, 'imported into another cache');
      expect(other.stats()).toMatchObject({ sequences: 1, rows: sh.streams.flat().reduce((n, s) => n + s.positions.length, 0) });

      // attention on the imported rows equals the reference
      const q = randn(rng, 4 * shape.headDim);
      const ref = attentionReference({ headDim: shape.headDim, queryHeads: 4, streams: sh.rows(0), queries: q });
      expectClose(there.attention(0, q), ref.out, outputTol(37), 'attention on imported rows');
      cache.dispose();
      other.dispose();
    });
  }

  it('the imported sequence is independent of the original', () => {
    const rng = testRng();
    const shape: Shape = { layers: 1, kvHeads: 2, headDim: 16, keys: 'f16', values: 'f16' };
    const cache = new KVCache({ ...shape, blockSize: 16, threads: 1 });
    const orig = cache.createSequence();
    const os = new Shadow(shape);
    const r = randomRows(rng, shape, 20); // partial last block
    orig.append(0, r.keys, r.values);
    os.append(0, r.keys, r.values);
    const copy = cache.importSequence(orig.export());
    const cs = os.clone();
    const a = randomRows(rng, shape, 3);
    copy.append(0, a.keys, a.values);
    cs.append(0, a.keys, a.values);
    os.expectMatches(orig, 'original after the copy appended');
    const b = randomRows(rng, shape, 30);
    orig.append(0, b.keys, b.values, { positions: positionsFrom(100, 30) });
    os.append(0, b.keys, b.values, positionsFrom(100, 30));
    cs.expectMatches(copy, 'copy after the original appended');
    orig.truncate(2);
    os.truncate(2);
    cs.expectMatches(copy, 'copy after the original truncated');
    orig.free();
    cs.expectMatches(copy, 'copy after the original was freed');
    copy.free();
    expect(cache.stats()).toMatchObject({ sequences: 0, blocksUsed: 0 });
    cache.dispose();
  });

  it('an empty sequence round-trips', () => {
    const shape: Shape = { layers: 2, kvHeads: 1, headDim: 8, keys: 'f16', values: 'f16' };
    const cache = new KVCache({ ...shape, threads: 1 });
    const copy = cache.importSequence(cache.createSequence().export());
    new Shadow(shape).expectMatches(copy, 'empty import');
    cache.dispose();
  });
});
