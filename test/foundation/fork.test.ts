// fork(): shared blocks with copy-on-write. Appending to or truncating a fork never changes the
// parent's rows and vice versa, including the shared partial last block (fork at T = 20, blockSize 16).
import { describe, expect, it } from 'vitest';
import { KVCache, type Sequence } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { outputTol } from './attention-tolerance';
import { Shadow, type Shape, randomRows } from './helpers';

const shape: Shape = { layers: 2, kvHeads: 2, headDim: 16, keys: 'f16', values: 'bf16' };

function grow(rng: ReturnType<typeof testRng>, seq: Sequence, shadow: Shadow, layer: number, T: number) {
  const { keys, values } = randomRows(rng, shape, T);
  seq.append(layer, keys, values);
  shadow.append(layer, keys, values);
}

describe('fork', () => {
  it('fork at T = 20 (partial block of 16): both append, each reads its own rows', () => {
    const rng = testRng();
    const cache = new KVCache({ ...shape, blockSize: 16, threads: 1 });
    const parent = cache.createSequence();
    const ps = new Shadow(shape);
    grow(rng, parent, ps, 0, 20);
    grow(rng, parent, ps, 1, 16); // layer 1 ends exactly on a block boundary
    const child = parent.fork();
    const cs = ps.clone();
    expect(child.cache).toBe(cache);
    cs.expectMatches(child, 'fork right after forking');
    grow(rng, child, cs, 0, 1);
    ps.expectMatches(parent, 'parent after child appended 1 row into the shared partial block');
    grow(rng, parent, ps, 0, 3);
    grow(rng, parent, ps, 1, 5);
    cs.expectMatches(child, 'child after parent appended');
    grow(rng, child, cs, 0, 30);
    grow(rng, child, cs, 1, 2);
    ps.expectMatches(parent, 'parent at the end');
    cs.expectMatches(child, 'child at the end');
    cache.dispose();
  });

  it('truncating a fork leaves the parent alone and vice versa; then both regrow', () => {
    const rng = testRng();
    const cache = new KVCache({ ...shape, blockSize: 16, threads: 1 });
    const parent = cache.createSequence();
    const ps = new Shadow(shape);
    grow(rng, parent, ps, 0, 40);
    grow(rng, parent, ps, 1, 40);
    const child = parent.fork();
    const cs = ps.clone();
    child.truncate(18);
    cs.truncate(18);
    ps.expectMatches(parent, 'parent after child truncate');
    cs.expectMatches(child, 'child truncated');
    parent.truncate(5);
    ps.truncate(5);
    cs.expectMatches(child, 'child after parent truncate');
    grow(rng, child, cs, 0, 7); // rewrites the shared partial block's tail in the child
    grow(rng, parent, ps, 0, 20);
    ps.expectMatches(parent, 'parent regrown');
    cs.expectMatches(child, 'child regrown');
    cache.dispose();
  });

  it('freeing the parent keeps the fork; a fork of a fork is independent of both', () => {
    const rng = testRng();
    const cache = new KVCache({ ...shape, blockSize: 8, threads: 1 });
    const a = cache.createSequence();
    const as = new Shadow(shape);
    grow(rng, a, as, 0, 13);
    const b = a.fork();
    const bs = as.clone();
    grow(rng, b, bs, 0, 2);
    const c = b.fork();
    const cs = bs.clone();
    grow(rng, c, cs, 0, 9);
    a.free();
    expect(a.freed).toBe(true);
    bs.expectMatches(b, 'b after a was freed');
    cs.expectMatches(c, 'c after a was freed');
    b.truncate(3);
    bs.truncate(3);
    cs.expectMatches(c, 'c after b truncated');
    bs.expectMatches(b, 'b truncated');
    cache.dispose();
  });

  it('attention on parent and fork each see their own rows after copy-on-write', () => {
    const rng = testRng();
    const queryHeads = 4;
    const cache = new KVCache({ ...shape, queryHeads, blockSize: 16, threads: 1 });
    const parent = cache.createSequence();
    const ps = new Shadow(shape);
    grow(rng, parent, ps, 0, 20);
    const child = parent.fork();
    const cs = ps.clone();
    grow(rng, child, cs, 0, 4);
    grow(rng, parent, ps, 0, 4);
    for (const [seq, sh, name] of [[parent, ps, 'parent'], [child, cs, 'child']] as const) {
      const q = randn(rng, 2 * queryHeads * shape.headDim);
      const ref = attentionReference({ headDim: shape.headDim, queryHeads, streams: sh.rows(0), queries: q });
      expectClose(seq.attention(0, q), ref.out, outputTol(24), `${name} attention`);
    }
    cache.dispose();
  });

  it('stats: a fork shares blocks (rows count twice), copy-on-write copies only the shared partial block', () => {
    const rng = testRng();
    const one: Shape = { ...shape, layers: 1, kvHeads: 1 };
    const cache = new KVCache({ ...one, blockSize: 16, threads: 1 });
    const parent = cache.createSequence();
    const r = randomRows(rng, one, 20);
    parent.append(0, r.keys, r.values);
    expect(cache.stats().blocksUsed).toBe(2);
    const child = parent.fork();
    expect(cache.stats()).toMatchObject({ sequences: 2, rows: 40, tokens: 40, blocksUsed: 2 });
    const x = randomRows(rng, one, 1);
    child.append(0, x.keys, x.values);
    expect(cache.stats().blocksUsed, 'child copied the shared partial block').toBe(3);
    parent.append(0, x.keys, x.values);
    expect(cache.stats().blocksUsed, 'parent writes its now unshared block in place').toBe(3);
    expect(cache.stats().rows).toBe(42);
    cache.dispose();
  });
});
