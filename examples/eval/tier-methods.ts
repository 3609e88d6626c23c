// Precision-tier methods of the evaluation (`tiers-...`): the story runs on a cache whose
// newest `rows` rows per stream stay in the top tier (f16) while older whole blocks are
// requantized once, at append time, into the lower tier (cache option tiers). The prefix and
// the scored tokens go through the model as for the storage methods, so every attention call
// reads both tiers. rowBytesPerToken is the lower tier's rate (what a long context tends to:
// the top tier's window is a fixed number of rows per stream).
import { KVCache } from '../../lib/index';
import type { Storage } from '../../lib/index';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { AttentionDims } from '../llama2c/model';
import type { Method } from './runner';
import { wholeStoryRun } from './whole-story';

interface TierMethod {
  rows: number;
  keys: Storage;
  values: Storage;
}

export const TIER_METHODS: TierMethod[] = [
  { rows: 128, keys: 'int8', values: 'int4' },
  { rows: 32, keys: 'int8', values: 'int4' },
  { rows: 128, keys: 'int4', values: 'int4' },
  { rows: 32, keys: 'int4', values: 'int4' },
];

/** Bytes per token of a long stream in the lower tier: one pool slot per block of that tier. */
function lowerTierBytesPerToken(dims: AttentionDims, settings: CacheSettings): number {
  const cache = new KVCache({ ...settings, ...dims, threads: 1 } as never);
  try {
    const t = cache.stats().tiers;
    const rowsPerBlock = t ? t[t.length - 1]!.rowsPerBlock : cache.config.blockSize;
    return (dims.layers * dims.kvHeads * cache.stats().blockBytes) / rowsPerBlock;
  } finally {
    cache.dispose();
  }
}

export function tierMethods(dims: AttentionDims, groupSize: number, rotateKeys: boolean): Method[] {
  return TIER_METHODS.map((m) => {
    const settings: CacheSettings = {
      tiers: [{ rows: m.rows, keys: 'f16', values: 'f16' }, { keys: m.keys, values: m.values }],
      groupSize,
      rotate: rotateKeys,
    };
    return {
      id: `tiers-f16-${m.rows}-${m.keys}-${m.values}`,
      family: 'precision tiers (f16 window, then lower tier)',
      label: `f16 newest ${m.rows} rows, then K ${m.keys} / V ${m.values} g${groupSize}${rotateKeys ? ', rotated K' : ''}`,
      rowBytesPerToken: lowerTierBytesPerToken(dims, settings),
      run: wholeStoryRun(settings),
    };
  });
}
