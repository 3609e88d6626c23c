// maxBytes: an append that does not fit throws OUT_OF_MEMORY and leaves the cache exactly as it
// was (rows, lengths, positions, stats), also when only some of the streams would have fit;
// smaller appends still work afterwards; copy-on-write of a shared block needs a free block.
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { outputTol } from './attention-tolerance';
import { Shadow, type Shape, expectKVError, expectSameCache, randomRows, snapshotCache } from './helpers';

function blockBytesOf(shape: Shape, blockSize: number): number {
  const probe = new KVCache({ ...shape, blockSize });
  const b = probe.stats().blockBytes;
  probe.dispose();
  return b;
}

describe('maxBytes budget', () => {
  it('room for 10 blocks: an append that does not fit throws OUT_OF_MEMORY and changes nothing', () => {
    const rng = testRng();
    const shape: Shape = { layers: 1, kvHeads: 2, headDim: 16, keys: 'f16', values: 'f16' };
    const blockBytes = blockBytesOf(shape, 16);
    // half a block of slack: capacity rounds down to whole blocks
    const cache = new KVCache({ ...shape, blockSize: 16, maxBytes: 10.5 * blockBytes, threads: 1 });
    expect(cache.stats().blocksFree).toBe(10);
    const seq = cache.createSequence();
    const sh = new Shadow(shape);
    const add = (T: number) => {
      const r = randomRows(rng, shape, T);
      seq.append(0, r.keys, r.values);
      sh.append(0, r.keys, r.values);
    };
    add(40); // 3 blocks per kv head
    expect(cache.stats()).toMatchObject({ blocksUsed: 6, blocksFree: 4 });

    // 50 more rows need 3 more blocks per kv head (6 > 4): the first kv head alone would fit
    let before = snapshotCache(cache, [seq]);
    const big = randomRows(rng, shape, 50);
    const err = expectKVError(() => seq.append(0, big.keys, big.values), 'OUT_OF_MEMORY', 'append 50');
    expect(err.message.length).toBeGreaterThan(0);
    expectSameCache(cache, [seq], before, 'after OUT_OF_MEMORY');
    sh.expectMatches(seq, 'rows after OUT_OF_MEMORY');

    add(40); // 80 rows = 5 full blocks per kv head: exactly the budget
    expect(cache.stats()).toMatchObject({ blocksUsed: 10, blocksFree: 0 });
    const other = cache.createSequence(); // a sequence without rows needs no block
    before = snapshotCache(cache, [seq, other]);
    const one = randomRows(rng, shape, 1);
    expectKVError(() => seq.append(0, one.keys, one.values), 'OUT_OF_MEMORY', 'append 1 on a full pool');
    expectKVError(() => other.append(0, one.keys, one.values), 'OUT_OF_MEMORY', 'new sequence on a full pool');
    expectSameCache(cache, [seq, other], before, 'full pool');
    sh.expectMatches(seq, 'rows on the full pool');

    // attention still reads the intact rows
    const q = randn(rng, 2 * 16);
    const ref = attentionReference({ headDim: 16, queryHeads: 2, streams: sh.rows(0), queries: q });
    expectClose(seq.attention(0, q), ref.out, outputTol(80), 'attention after OUT_OF_MEMORY');

    // freeing room lets the same append through
    seq.truncate(64); // 4 blocks per kv head
    sh.truncate(64);
    expect(cache.stats().blocksFree).toBe(2);
    seq.append(0, one.keys, one.values);
    sh.append(0, one.keys, one.values);
    sh.expectMatches(seq, 'append after truncate');
    cache.dispose();
  });

  it('fork + copy-on-write near the budget', () => {
    const rng = testRng();
    const shape: Shape = { layers: 1, kvHeads: 1, headDim: 16, keys: 'f32', values: 'f16' };
    const blockBytes = blockBytesOf(shape, 16);
    const cache = new KVCache({ ...shape, blockSize: 16, maxBytes: 4 * blockBytes, threads: 1 });
    const mk = (T: number) => {
      const s = cache.createSequence();
      const sh = new Shadow(shape);
      const r = randomRows(rng, shape, T);
      s.append(0, r.keys, r.values);
      sh.append(0, r.keys, r.values);
      return { s, sh };
    };
    const a = mk(20); // 2 blocks, the second partial
    const b = { s: a.s.fork(), sh: a.sh.clone() };
    const c = mk(16);
    const d = mk(16);
    expect(cache.stats()).toMatchObject({ sequences: 4, blocksUsed: 4, blocksFree: 0 });
    const all = () => [a.s, b.s, c.s, d.s];
    const x = randomRows(rng, shape, 1);

    // writing into the shared partial block needs a copy, and there is no free block
    let before = snapshotCache(cache, all());
    expectKVError(() => b.s.append(0, x.keys, x.values), 'OUT_OF_MEMORY', 'fork append without room for the copy');
    expectKVError(() => a.s.append(0, x.keys, x.values), 'OUT_OF_MEMORY', 'parent append into a shared block');
    expectSameCache(cache, all(), before, 'after failed copy-on-write');
    const e = a.s.fork(); // forking itself needs no block
    expect(cache.stats().blocksUsed).toBe(4);
    e.free();

    d.s.free();
    expect(cache.stats().blocksFree).toBe(1);
    b.s.append(0, x.keys, x.values); // copies the shared block into the last free one
    b.sh.append(0, x.keys, x.values);
    expect(cache.stats()).toMatchObject({ blocksUsed: 4, blocksFree: 0 });
    const y = randomRows(rng, shape, 1);
    a.s.append(0, y.keys, y.values); // a's block is no longer shared: written in place
    a.sh.append(0, y.keys, y.values);
    a.sh.expectMatches(a.s, 'parent after copy-on-write');
    b.sh.expectMatches(b.s, 'fork after copy-on-write');
    c.sh.expectMatches(c.s, 'bystander');

    before = snapshotCache(cache, [a.s, b.s, c.s]);
    const z = randomRows(rng, shape, 12); // 21 + 12 = 33 rows needs a third block
    expectKVError(() => a.s.append(0, z.keys, z.values), 'OUT_OF_MEMORY', 'parent grows past the budget');
    expectSameCache(cache, [a.s, b.s, c.s], before, 'after parent OUT_OF_MEMORY');
    const w = randomRows(rng, shape, 11); // 21 + 11 = 32 fits in its 2 blocks
    a.s.append(0, w.keys, w.values);
    a.sh.append(0, w.keys, w.values);
    a.sh.expectMatches(a.s, 'parent filled to the block boundary');

    // importing needs blocks of its own: b (21 rows) needs 2, never shared with the original
    const bytes = b.s.export();
    for (const step of ['full pool', 'one block free']) {
      if (step === 'one block free') c.s.free();
      before = snapshotCache(cache, [a.s, b.s]);
      expectKVError(() => cache.importSequence(bytes), 'OUT_OF_MEMORY', `import, ${step}`);
      expectSameCache(cache, [a.s, b.s], before, `after import OUT_OF_MEMORY, ${step}`);
    }
    a.s.free(); // releases a's own second block; the first stays with b
    expect(cache.stats().blocksFree).toBe(2);
    const imported = cache.importSequence(bytes);
    b.sh.expectMatches(imported, 'imported copy of b');
    expect(cache.stats().blocksFree).toBe(0);
    cache.dispose();
  });
});
