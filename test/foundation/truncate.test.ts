// truncate(n): every stream drops its trailing rows with position >= n, nextPosition becomes
// min(nextPosition, n); appending afterwards continues at n with fresh rows (no stale data from
// the old partial block), blocks that became empty go back to the pool.
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { positionsFrom, randn, testRng } from '../reference/random';
import { outputTol } from './attention-tolerance';
import { Shadow, type Shape, randomRows } from './helpers';

const shape: Shape = { layers: 2, kvHeads: 2, headDim: 16, keys: 'f16', values: 'f16' };

describe('truncate', () => {
  it('truncate then append: positions, nextPosition and rows', () => {
    const rng = testRng();
    const cache = new KVCache({ ...shape, blockSize: 16, threads: 1 });
    const seq = cache.createSequence();
    const sh = new Shadow(shape);
    for (const [layer, T] of [[0, 50], [1, 45]]) {
      const r = randomRows(rng, shape, T!);
      seq.append(layer!, r.keys, r.values);
      sh.append(layer!, r.keys, r.values);
    }
    seq.truncate(30);
    sh.truncate(30);
    sh.expectMatches(seq, 'after truncate(30)');
    expect(seq.nextPosition(0)).toBe(30);
    expect(seq.length(1, 1)).toBe(30);
    const r = randomRows(rng, shape, 5);
    seq.append(0, r.keys, r.values);
    sh.append(0, r.keys, r.values);
    sh.expectMatches(seq, 'after append of 5');
    expect(Array.from(seq.read(0, 0).positions.subarray(28))).toEqual([28, 29, 30, 31, 32, 33, 34]);
    // attention sees the new rows, not the overwritten ones of the old partial block
    const q = randn(rng, 2 * shape.kvHeads * shape.headDim);
    const ref = attentionReference({ headDim: shape.headDim, queryHeads: 2, streams: sh.rows(0), queries: q });
    expectClose(seq.attention(0, q), ref.out, outputTol(35), 'attention after truncate + append');
    cache.dispose();
  });

  it('n beyond the end is a no-op; n = 0 empties every stream; nextPosition = min(nextPosition, n)', () => {
    const rng = testRng();
    const cache = new KVCache({ ...shape, blockSize: 16, threads: 1 });
    const seq = cache.createSequence();
    const sh = new Shadow(shape);
    const r = randomRows(rng, shape, 20);
    seq.append(0, r.keys, r.values);
    sh.append(0, r.keys, r.values);
    seq.truncate(1000);
    sh.expectMatches(seq, 'truncate(1000)');
    expect(seq.nextPosition(0)).toBe(20);
    expect(seq.nextPosition(1)).toBe(0);
    seq.truncate(20);
    sh.expectMatches(seq, 'truncate(length)');
    seq.truncate(0);
    sh.truncate(0);
    sh.expectMatches(seq, 'truncate(0)');
    expect(cache.stats()).toMatchObject({ rows: 0, tokens: 0, blocksUsed: 0 });
    cache.dispose();
  });

  it('gapped positions: rows are dropped by position, nextPosition may lie past the last row', () => {
    const rng = testRng();
    const cache = new KVCache({ ...shape, blockSize: 4, threads: 1 });
    const seq = cache.createSequence();
    const sh = new Shadow(shape);
    for (const pos of [positionsFrom(0, 10), positionsFrom(20, 10)]) {
      const r = randomRows(rng, shape, 10);
      seq.append(0, r.keys, r.values, { positions: pos });
      sh.append(0, r.keys, r.values, pos);
    }
    seq.truncate(15);
    sh.truncate(15);
    sh.expectMatches(seq, 'truncate(15) into the gap');
    expect(seq.length(0, 0)).toBe(10);
    expect(seq.nextPosition(0)).toBe(15);
    const r = randomRows(rng, shape, 2);
    seq.append(0, r.keys, r.values);
    sh.append(0, r.keys, r.values);
    expect(Array.from(seq.read(0, 1).positions.subarray(9))).toEqual([9, 15, 16]);
    sh.expectMatches(seq, 'append after truncate into the gap');
    cache.dispose();
  });

  it('blocks emptied by truncate are released', () => {
    const rng = testRng();
    const one: Shape = { ...shape, layers: 1, kvHeads: 1 };
    const cache = new KVCache({ ...one, blockSize: 16, threads: 1 });
    const seq = cache.createSequence();
    const r = randomRows(rng, one, 50);
    seq.append(0, r.keys, r.values);
    expect(cache.stats().blocksUsed).toBe(4);
    seq.truncate(32);
    expect(cache.stats().blocksUsed).toBe(2);
    seq.truncate(31);
    expect(cache.stats().blocksUsed).toBe(2);
    seq.truncate(16);
    expect(cache.stats().blocksUsed).toBe(1);
    cache.dispose();
  });
});
