// Eviction and fork(): evicting a fork never changes its parent (rows, lengths, scores), and
// evicting the parent never changes the fork; copy-on-write blocks are accounted for.
import { describe, expect, it } from 'vitest';
import { EvictionPolicy } from '../../lib/index';
import { randn, testRng } from '../reference/random';
import { expectSameSeq, snapshotSeq } from '../foundation/helpers';
import { expectBitExact } from '../reference/compare';
import { allLengths, filled, keptRows } from './helpers';

function allScores(seq: ReturnType<typeof filled>['seq']): Float32Array[] {
  const out: Float32Array[] = [];
  for (let l = 0; l < seq.cache.config.layers; l++) for (let h = 0; h < seq.cache.config.kvHeads; h++) out.push(seq.scores(l, h));
  return out;
}

// Blocks of a rebuilt stream that hold exactly one old block's rows (kept rows are the
// original positions here): eviction keeps such a block instead of copying it.
function wholeOldBlocks(kept: number[], blockSize: number): number {
  let n = 0;
  for (let b = 0; b * blockSize < kept.length; b++) {
    const run = kept.slice(b * blockSize, (b + 1) * blockSize);
    if (run[0]! % blockSize === 0 && run[run.length - 1] === run[0]! + run.length - 1) n++;
  }
  return n;
}

describe('fork + evict isolation', () => {
  it('evicting a fork leaves the parent as it was; evicting the parent leaves the fork', () => {
    const rng = testRng();
    const T = 70;
    const { cache, seq: parent } = filled(rng, { layers: 2, kvHeads: 2, headDim: 16, queryHeads: 4, blockSize: 8, keys: 'int8', values: 'int4', groupSize: 16 }, T);
    const snap = snapshotSeq(parent, 2, 2);
    const parentScores = allScores(parent);
    const blocksParent = cache.stats().blocksUsed;

    const child = parent.fork();
    expect(allScores(child)).toEqual(parentScores); // scores are copied by fork
    const r = child.evict(EvictionPolicy.h2o({ recent: 8 }), { ratio: 0.5 });
    expectSameSeq(parent, snap, 'parent after evicting the fork');
    allScores(parent).forEach((s, i) => expectBitExact(s, parentScores[i]!, `parent scores ${i}`));
    // The fork's blocks were all shared: its kept rows went into fresh blocks, except where a
    // whole old block was kept row for row (that block stays shared); nothing was freed.
    const childBlocks = allLengths(child).reduce((a, n) => a + Math.ceil(n / 8), 0);
    let stillShared = 0;
    for (let l = 0; l < 2; l++) for (let h = 0; h < 2; h++) stillShared += wholeOldBlocks(keptRows(child, l, h), 8);
    expect(r.blocksFreed).toBe(-(childBlocks - stillShared));
    expect(cache.stats().blocksUsed).toBe(blocksParent + childBlocks - stillShared);

    // Now the parent: the fork is not touched, and the parent's blocks are exclusive again.
    const snapChild = snapshotSeq(child, 2, 2);
    const r2 = parent.evict(EvictionPolicy.slidingWindow({ window: 10 }));
    expectSameSeq(child, snapChild, 'fork after evicting the parent');
    expect(r2.blocksFreed).toBe(blocksParent - stillShared - 4 * Math.ceil(10 / 8));
    for (let l = 0; l < 2; l++) for (let h = 0; h < 2; h++) expect(keptRows(parent, l, h)).toEqual([...Array(10).keys()].map((i) => T - 10 + i));

    parent.free();
    child.free();
    expect(cache.stats().blocksUsed).toBe(0);
    cache.dispose();
  });

  it('a fork that appended after forking (partly shared blocks) evicts without touching the parent', () => {
    const rng = testRng();
    const { cache, seq: parent } = filled(rng, { layers: 1, kvHeads: 2, headDim: 8, blockSize: 8 }, 37, { calls: 0, tq: 1 });
    const snap = snapshotSeq(parent, 1, 2);
    const child = parent.fork();
    child.append(0, randn(rng, 9 * 2 * 8), randn(rng, 9 * 2 * 8));
    const seed = rng.int(0, 1000);
    const childBefore = [0, 1].map((h) => child.read(0, h));
    child.evict(EvictionPolicy.random(seed, { sinks: 2, recent: 3 }), { keep: 20 });
    expectSameSeq(parent, snap, 'parent');
    for (let h = 0; h < 2; h++) {
      const kept = keptRows(child, 0, h);
      expect(kept.length).toBe(20);
      expect(kept.slice(0, 2)).toEqual([0, 1]);
      expect(kept.slice(-3)).toEqual([43, 44, 45]);
      const a = child.read(0, h);
      kept.forEach((row, i) => expectBitExact(a.keys.subarray(i * 8, i * 8 + 8), childBefore[h]!.keys.subarray(row * 8, row * 8 + 8), `row ${row}`));
    }
    // the parent still attends over its own 37 rows
    expect(Array.from(parent.lengths(0))).toEqual([37, 37]);
    cache.dispose();
  });
});
