// PrefixStore keys separate every cache configuration whose exports another would refuse:
// low-rank key and value ranks (version 5 bytes) and precision tier lists (version 4 bytes
// import only into the same tiers); configurations that read each other's bytes share keys.
import { describe, expect, it } from 'vitest';

import { KVCache, type KVCacheOptions } from '../../lib/index';
import { fingerprint } from '../../lib/prefix-store/keys';

const base = { layers: 1, kvHeads: 1, headDim: 32, queryHeads: 1, groupSize: 8, keys: 'f16', values: 'f16' } as const;

function printOf(options: KVCacheOptions): string {
  using cache = new KVCache(options);
  return fingerprint('m', cache.config, 16);
}

describe('PrefixStore fingerprint', () => {
  it('differs where the bytes are incompatible, and only there', () => {
    const configs: KVCacheOptions[] = [
      base,
      { ...base, lowRank: { keys: 8, values: 8 } },
      { ...base, lowRank: { keys: 8, values: 16 } },
      { ...base, lowRank: { keys: 8, values: 32 } },
      { ...base, tiers: [{ rows: 16, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }] },
      { ...base, tiers: [{ rows: 16, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int4' }] },
      { ...base, tiers: [{ rows: 32, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }] },
    ];
    const prints = configs.map(printOf);
    expect(new Set(prints).size).toBe(configs.length);
    // a cache option that does not change the bytes (the pool budget) keeps the key
    expect(printOf({ ...base, maxBytes: 1 << 24 })).toBe(prints[0]);
    expect(printOf({ ...configs[2]!, maxBytes: 1 << 24 })).toBe(prints[2]);
  });

  it('exports of each configuration import into a cache of the same fingerprint', () => {
    for (const options of [{ ...base, lowRank: { keys: 8, values: 32, calibrationRows: 2 } }, { ...base, tiers: [{ rows: 8, keys: 'f16', values: 'f16' }, { keys: 'int8', values: 'int8' }] }] as KVCacheOptions[]) {
      using a = new KVCache(options);
      using b = new KVCache(options);
      expect(fingerprint('m', a.config, 16)).toBe(fingerprint('m', b.config, 16));
      const seq = a.createSequence();
      seq.append(0, Float32Array.from({ length: 20 * 32 }, (_, i) => Math.sin(i)), Float32Array.from({ length: 20 * 32 }, (_, i) => Math.cos(i)));
      expect(b.importSequence(seq.export()).lengths(0)).toEqual(seq.lengths(0));
    }
  });
});
