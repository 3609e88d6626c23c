// KVCache.profile(): the presets' options, and a profile's memory target kept while decoding.
import { describe, expect, it } from 'vitest';
import { Compactor, KVCache, type KVCacheOptions, PROFILES } from '../../lib/index';
import { profileOf } from '../../lib/profiles';
import { randn, testRng } from '../reference/random';
import { expectKVError } from '../foundation/helpers';

const shape = { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, blockSize: 16, threads: 1 };

describe('KVCache.profile', () => {
  it('combines storage and a memory target relative to f16', () => {
    const f16 = KVCache.bytesPerToken({ ...shape, keys: 'f16', values: 'f16' });
    for (const name of ['quality', 'balanced', 'tiny'] as const) {
      const p = KVCache.profile(name, shape);
      const entry = PROFILES[name];
      expect(p.name).toBe(name);
      // Tiers only where the older rows' format takes at most half of f16's bytes per row.
      const tiered = entry.tiers !== null && 2 * KVCache.bytesPerToken({ ...shape, keys: entry.keys, values: entry.values }) <= f16;
      if (!tiered) {
        expect(p.options).toMatchObject({ ...shape, keys: entry.keys, values: entry.values, rotate: true });
        expect(p.options.tiers).toBeUndefined();
      } else {
        // Recent rows in f16, older ones in the profile's formats.
        expect(p.options).toMatchObject({ ...shape, keys: 'f16', values: 'f16', rotate: true });
        expect(p.options.tiers).toEqual([
          { rows: entry.tiers!.recentRows, keys: 'f16', values: 'f16' }, { keys: entry.keys, values: entry.values },
        ]);
      }
      if (entry.targetFractionOfF16 === null) {
        expect(p.maintain).toBeNull();
      } else {
        expect(p.maintain!.bytesPerToken).toBeCloseTo(entry.targetFractionOfF16 * f16, 9);
        expect(p.maintain!.policy).toBeInstanceOf(Compactor);
        expect((p.maintain!.policy as Compactor).options).toMatchObject({ ratio: entry.compactionRatio, method: entry.compactionMethod });
      }
      // Storage alone (of the older rows, with tiers) is already below f16.
      expect(KVCache.bytesPerToken({ ...shape, keys: entry.keys, values: entry.values })).toBeLessThan(f16);
    }
    // An entry with tiers: head_dim 64 keeps the recent rows in f16; at head_dim 8 int4 rows are
    // more than half of f16's (an aged block would hold no more rows), so no tiers.
    const withTiers = { ...PROFILES.tiny, tiers: { recentRows: 16 } };
    const rate = (o: KVCacheOptions) => KVCache.bytesPerToken(o);
    const wide = profileOf('tiny', withTiers, { ...shape, headDim: 64 }, rate);
    expect(wide.options.tiers).toEqual([{ rows: 16, keys: 'f16', values: 'f16' }, { keys: 'int4', values: 'int4' }]);
    expect(wide.options).toMatchObject({ keys: 'f16', values: 'f16' });
    expect(wide.maintain!.bytesPerToken).toBeCloseTo(KVCache.bytesPerToken({ ...shape, headDim: 64, keys: 'f16', values: 'f16' }) / 16, 9);
    expect(profileOf('tiny', withTiers, { ...shape, headDim: 8, queryHeads: 4 }, rate).options.tiers).toBeUndefined();
    const cache = new KVCache(wide.options);  // a valid tiered cache
    expect(cache.stats().tiers).toHaveLength(2);
    cache.dispose();
    // No rotation for a headDim that is not a power of two.
    expect(KVCache.profile('tiny', { ...shape, headDim: 24, queryHeads: 4 }).options.rotate).toBe(false);
    expectKVError(() => KVCache.profile('huge' as never, shape), 'INVALID_ARGUMENT');
    expectKVError(() => KVCache.profile('toString' as never, shape), 'INVALID_ARGUMENT');
    expectKVError(() => KVCache.profile('tiny', { ...shape, keys: 'f32' } as never), 'INVALID_ARGUMENT');
  });

  it("'tiny' holds a decoding sequence at 1/16 of f16's bytes per token", async () => {
    const rng = testRng();
    const p = KVCache.profile('tiny', shape);
    const cache = new KVCache(p.options);
    const seq = cache.createSequence();
    const m = cache.maintain(seq, p.maintain!);
    const errors: unknown[] = [];
    m.on('error', (e) => errors.push(e));
    const T = 1200;
    for (let t = 0; t < T; t++) {
      for (let l = 0; l < shape.layers; l++) {
        seq.append(l, randn(rng, 2 * 32), randn(rng, 2 * 32));
        seq.attention(l, randn(rng, 4 * 32), { recordQueries: true, ...p.attention });
      }
      await m.idle();
    }
    expect(errors).toEqual([]);
    expect(m.passes).toBeGreaterThan(0);
    // Within the target plus the block each stream may have opened since the last pass.
    const slack = (shape.layers * shape.kvHeads * cache.stats().blockBytes) / T;
    expect(m.usage().bytes / T).toBeLessThanOrEqual(p.maintain!.bytesPerToken! + slack);
    await m.stop();
    cache.dispose();
  });
});
