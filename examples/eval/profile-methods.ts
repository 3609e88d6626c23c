// Profile methods of the evaluation (`profile-quality`, `profile-balanced`, `profile-tiny`, and the
// variants `profile-balanced-tiers`, `profile-tiny-tiers` and `profile-NAME-highest-attention`):
// the story runs on a cache made from KVCache.profile(name, dims), its sequence maintained
// with the profile's memory target (cache.maintain) while the model decodes: the prefix is a
// prefill, then every scored token is a decode step (Tq = 1) with recorded queries, and each
// step waits for a pass in flight before the next (so the run is deterministic). Bytes per
// token are measured on the sequence at the end of the story, block rounding included:
// keptFraction = those bytes / (the profile storage's bytes per token × tokens), so that the
// report's bytes per token (rowBytesPerToken × keptFraction) is the measured figure.
import { type CompactionMethod, KVCache, PROFILES, type ProfileName } from '../../lib/index';
import { profileOf } from '../../lib/profiles';
import { native } from '../../lib/native/binding';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { AttentionDims } from '../llama2c/model';
import type { Method } from './runner';

export const PROFILE_NAMES: readonly ProfileName[] = ['quality', 'balanced', 'tiny'];

// The shipped profiles, and balanced and tiny with an f16 top tier of recent rows
// (`profile-NAME-tiers`; used only where the older rows' format is at most half of f16's).
const VARIANTS: readonly { id: string; name: ProfileName; recentRows: number | null; method?: CompactionMethod }[] = [
  ...PROFILE_NAMES.map((name) => ({ id: `profile-${name}`, name, recentRows: null })),
  { id: 'profile-balanced-tiers', name: 'balanced', recentRows: 32 },
  { id: 'profile-tiny-tiers', name: 'tiny', recentRows: 16 },
  // the same profiles with the other compaction method (the table's choice is measured against it)
  { id: 'profile-balanced-highest-attention', name: 'balanced', recentRows: null, method: 'highest-attention' },
  { id: 'profile-tiny-highest-attention', name: 'tiny', recentRows: null, method: 'highest-attention' },
];

export function profileMethods(dims: AttentionDims): Method[] {
  return VARIANTS.flatMap(({ id, name, recentRows, method }): Method[] => {
    const make = () => recentRows === null && method === undefined ? KVCache.profile(name, dims)
      : profileOf(name, { ...PROFILES[name], ...(recentRows !== null ? { tiers: { recentRows } } : {}),
        ...(method !== undefined ? { compactionMethod: method } : {}) }, dims, (o) => KVCache.bytesPerToken(o));
    const profile = make();
    if (recentRows !== null && !profile.options.tiers) return [];
    const { layers: _l, kvHeads: _k, headDim: _h, queryHeads: _q, ...settings } = profile.options;
    const rowBytes = KVCache.bytesPerToken(profile.options);
    const target = profile.targetFractionOfF16;
    return [{
      id,
      family: 'profiles',
      label: `profile ${name}${method ? ` (${method})` : ''}: ${settings.tiers ? `f16 recent ${settings.tiers[0]!.rows} rows -> ` : ''}K ${settings.tiers?.[1]?.keys ?? settings.keys} / V ${settings.tiers?.[1]?.values ?? settings.values}${target ? `, target 1/${Math.round(1 / target)} of f16` : ''}`,
      param: target ?? 1,
      rowBytesPerToken: rowBytes,
      async run(ctx) {
        const h = ctx.fresh(settings as CacheSettings, { recordQueries: true });
        const seq = h.backend.sequence;
        const p = make();
        const maintainer = p.maintain ? seq.cache.maintain(seq, p.maintain) : null;
        const { ids, prefix } = ctx;
        const n = ids.length;
        const V = ctx.checkpoint.config.vocabSize;
        try {
          if (prefix > 0) h.model.prefill(ids.slice(0, prefix), { chunkSize: ctx.chunk, logits: 'none' });
          await maintainer?.idle();
          const logits = new Float32Array((n - 1 - prefix) * V);
          for (let t = prefix; t < n - 1; t++) {
            logits.set(h.model.forward([ids[t]!], 'all'), (t - prefix) * V);
            await maintainer?.idle();
          }
          if (maintainer && maintainer.errors > 0) throw maintainer.lastError;
          const blocks = seq.lengths(0).length > 0 ? measuredBytes(seq) : 0;
          return { logits, keptFraction: blocks / (rowBytes * (n - 1)) };
        } finally {
          await maintainer?.stop();
          h.release();
        }
      },
    }];
  });
}

/**
 * Bytes of the blocks the sequence holds (every layer and kv head, partial blocks counted
 * whole; with tiers, an aged block holds more rows than a top-tier one, so the blocks are
 * counted from the block tables).
 */
function measuredBytes(seq: import('../../lib/index').Sequence): number {
  return native().sequenceUsage(seq.native).blocks * seq.cache.stats().blockBytes;
}
