// Failures of eviction: bad policy and budget objects (INVALID_ARGUMENT with messages naming
// the option), missing scores or recorded queries, custom scores of the wrong shape, freed
// sequences and disposed caches (DISPOSED). A failed evict leaves the cache as it was.
import { describe, expect, it } from 'vitest';
import { EvictionPolicy, KVCache } from '../../lib/index';
import { randn, testRng } from '../reference/random';
import { expectKVError, expectSameCache, snapshotCache } from '../foundation/helpers';

function small() {
  const rng = testRng();
  const cache = new KVCache({ layers: 2, kvHeads: 2, headDim: 4, blockSize: 4, threads: 1 });
  const seq = cache.createSequence();
  for (let l = 0; l < 2; l++) seq.append(l, randn(rng, 10 * 8), randn(rng, 10 * 8));
  return { cache, seq };
}

describe('eviction errors', () => {
  it('bad policy options -> INVALID_ARGUMENT naming the option', () => {
    expect(expectKVError(() => EvictionPolicy.slidingWindow({} as never), 'INVALID_ARGUMENT').message).toMatch(/options\.window/);
    expectKVError(() => EvictionPolicy.slidingWindow({ window: -1 }), 'INVALID_ARGUMENT');
    expectKVError(() => EvictionPolicy.streamingLLM({ window: 4, sinks: 1.5 }), 'INVALID_ARGUMENT');
    expect(expectKVError(() => EvictionPolicy.snapKV({ pool: 4 }), 'INVALID_ARGUMENT').message).toMatch(/odd/);
    expectKVError(() => EvictionPolicy.snapKV({ window: 0 }), 'INVALID_ARGUMENT');
    expect(expectKVError(() => EvictionPolicy.h2o({ recnt: 3 } as never), 'INVALID_ARGUMENT').message).toMatch(/recnt/);
    expectKVError(() => EvictionPolicy.random(-1), 'INVALID_ARGUMENT');
    expectKVError(() => EvictionPolicy.random(1.5), 'INVALID_ARGUMENT');
    expectKVError(() => EvictionPolicy.custom(42 as never), 'INVALID_ARGUMENT');
    expectKVError(() => EvictionPolicy.custom({ fn: () => new Float32Array(), keys: 'yes' } as never), 'INVALID_ARGUMENT');
  });

  it('bad budgets and non-policies -> INVALID_ARGUMENT; the cache is unchanged', () => {
    const { cache, seq } = small();
    const before = snapshotCache(cache, [seq]);
    const p = EvictionPolicy.keyNorm();
    const bad: unknown[] = [
      {}, { keep: 3, ratio: 0.5 }, { keep: -1 }, { keep: 2.5 }, { ratio: 1.5 }, { ratio: NaN }, { layers: [0.5] },
      { layers: [0.5, 2] }, { ratio: 0.5, perHead: 'some' }, { ratio: 0.5, safeguard: 2 }, { ratio: 0.5, schedule: 'cone' },
      { layers: [0.5, 0.5], schedule: 'pyramid' }, { ratio: 0.5, slope: -0.1 }, { ratio: 0.5, kep: 3 }, null, 7,
    ];
    for (const b of bad) expectKVError(() => seq.evict(p, b as never), 'INVALID_ARGUMENT', JSON.stringify(b));
    expect(expectKVError(() => seq.evict(EvictionPolicy.h2o()), 'INVALID_ARGUMENT').message).toMatch(/budget is required/);
    expectKVError(() => seq.evict({ kind: 'h2o' } as never, { ratio: 0.5 }), 'INVALID_ARGUMENT');
    expectSameCache(cache, [seq], before, 'after failed evictions');
    cache.dispose();
  });

  it('h2o without accumulated scores, snapKV / tova without recorded queries -> INVALID_ARGUMENT, nothing changed', () => {
    const { cache, seq } = small();
    const before = snapshotCache(cache, [seq]);
    expect(expectKVError(() => seq.evict(EvictionPolicy.h2o(), { ratio: 0.5 }), 'INVALID_ARGUMENT').message).toMatch(/accumulateScores/);
    expectSameCache(cache, [seq], before, 'after failed h2o without scores');
    expect(expectKVError(() => seq.evict(EvictionPolicy.snapKV(), { ratio: 0.5 }), 'INVALID_ARGUMENT').message).toMatch(/recordQueries/);
    expectKVError(() => seq.evict(EvictionPolicy.tova(), { ratio: 0.5 }), 'INVALID_ARGUMENT');
    // only layer 0 accumulated: still an error (layer 1 has none), and nothing is evicted
    seq.attention(0, randn(testRng(), 8), { accumulateScores: true });
    const mid = snapshotCache(cache, [seq]);
    expect(expectKVError(() => seq.evict(EvictionPolicy.h2o(), { ratio: 0.5 }), 'INVALID_ARGUMENT').message).toMatch(/layer 1/);
    expectSameCache(cache, [seq], mid, 'after failed h2o');
    cache.dispose();
  });

  it('custom scores of the wrong type, length or with NaN', () => {
    const { cache, seq } = small();
    expectKVError(() => seq.evict(EvictionPolicy.custom(() => [1, 2] as never), { keep: 2 }), 'INVALID_ARGUMENT');
    expectKVError(() => seq.evict(EvictionPolicy.custom(() => new Float32Array(3)), { keep: 2 }), 'SHAPE_MISMATCH');
    expect(expectKVError(() => seq.evict(EvictionPolicy.custom((v) => new Float32Array(v.length).fill(NaN)), { keep: 2 }),
      'INVALID_ARGUMENT').message).toMatch(/NaN/);
    cache.dispose();
  });

  it('freed sequences and disposed caches -> DISPOSED', () => {
    const { cache, seq } = small();
    const other = cache.createSequence();
    other.free();
    expectKVError(() => other.evict(EvictionPolicy.keyNorm(), { ratio: 0.5 }), 'DISPOSED');
    expectKVError(() => other.scores(0, 0), 'DISPOSED');
    expectKVError(() => other.recordedQueries(0, 0), 'DISPOSED');
    expectKVError(() => other.resetScores(), 'DISPOSED');
    expectKVError(() => EvictionPolicy.keyNorm().scores(other, 0, 0), 'DISPOSED');
    cache.dispose();
    expectKVError(() => seq.evict(EvictionPolicy.keyNorm(), { ratio: 0.5 }), 'DISPOSED');
    expectKVError(() => seq.scores(0, 0), 'DISPOSED');
  });

  it('layer / kvHead out of range -> INVALID_ARGUMENT', () => {
    const { cache, seq } = small();
    expectKVError(() => seq.scores(2, 0), 'INVALID_ARGUMENT');
    expectKVError(() => seq.recordedQueries(0, 2), 'INVALID_ARGUMENT');
    expectKVError(() => EvictionPolicy.keyNorm().scores(seq, 0, -1), 'INVALID_ARGUMENT');
    cache.dispose();
  });
});
