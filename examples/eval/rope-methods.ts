// Methods over a cache that applies RoPE itself (cache option `rope`: keys stored before
// RoPE): the storage format alone (a check: it must score as the post-RoPE cache does) and
// StreamingLLM eviction with RoPE positions as stored or re-indexed by rank in the stream
// (StreamingLLM's own choice: positions inside the cache, so the kept window sits right
// after the sinks). Both models use llama2.c's RoPE: theta 10000, interleaved pairs.
import { KVCache, type EvictionPolicy as EvictionPolicyType } from '../../lib/index';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { AttentionDims } from '../llama2c/model';
import type { Method } from './runner';
import { wholeStoryRun } from './whole-story';

export const MODEL_ROPE = { theta: 10000, style: 'interleaved' } as const;

type Lib = { EvictionPolicy?: typeof EvictionPolicyType };

export function ropeMethods(lib: Lib, dims: AttentionDims, base: CacheSettings, ratios: number[]): Method[] {
  const settings: CacheSettings = { ...base, rope: MODEL_ROPE };
  const bytes = KVCache.bytesPerToken({ ...settings, ...dims } as never);
  const methods: Method[] = [
    {
      id: 'rope-f16',
      family: 'storage, pre-RoPE keys',
      label: `${base.keys} keys before RoPE (cache applies RoPE)`,
      rowBytesPerToken: bytes,
      run: wholeStoryRun(settings),
    },
  ];
  const EP = lib.EvictionPolicy;
  if (typeof EP?.streamingLLM !== 'function') return methods;
  for (const positions of ['stored', 'rank'] as const) {
    for (const ratio of ratios) {
      methods.push({
        id: `evict-streamingLLM-rope-${positions}-${ratio}`,
        family: `evict streamingLLM, RoPE positions ${positions === 'rank' ? 're-indexed' : 'as stored'}`,
        label: `streamingLLM, keep ${ratio * 100}%, positions ${positions}`,
        param: ratio,
        rowBytesPerToken: bytes,
        async run(ctx) {
          const h = ctx.fresh(settings);
          try {
            if (ctx.prefix > 0) h.model.prefill(ctx.ids.slice(0, ctx.prefix), { chunkSize: ctx.chunk, logits: 'none' });
            // The parameters of the post-RoPE streamingLLM rows (methods.ts).
            const keep = Math.max(1, Math.round(ratio * ctx.prefix));
            const sinks = Math.min(4, keep >> 1);
            h.backend.sequence.evict(EP.streamingLLM({ sinks, window: keep - sinks }), { ratio });
            const kept = h.backend.rows() / (ctx.prefix * ctx.dims.layers * ctx.dims.kvHeads);
            h.backend.attentionOptions = { positions };
            return { logits: ctx.scoreRest(h.model), keptFraction: kept };
          } finally {
            h.release();
          }
        },
      });
    }
  }
  // SnapKV and TOVA score rows by recorded queries, rotated with the keys at their positions
  // (or ranks) inside the cache (docs/rope-eviction.md); the parameters of the post-RoPE
  // evict-snapKV / evict-tova rows (methods.ts), so the two compare row for row.
  const queryPolicies = {
    snapKV: (keep: number, positions: 'stored' | 'rank') => EP.snapKV({ window: 8, pool: 3, ...protectFor(keep), positions }),
    tova: (keep: number, positions: 'stored' | 'rank') => EP.tova({ ...protectFor(keep), positions }),
  };
  if (typeof EP.snapKV !== 'function') return methods;
  for (const [policy, make] of Object.entries(queryPolicies)) {
    for (const positions of ['stored', 'rank'] as const) {
      for (const ratio of ratios) {
        methods.push({
          id: `evict-${policy}-rope${positions === 'rank' ? '-rank' : ''}-${ratio}`,
          family: `evict ${policy}, keys before RoPE${positions === 'rank' ? ', positions re-indexed' : ''}`,
          label: `${policy}, keep ${ratio * 100}%, positions ${positions}`,
          param: ratio,
          rowBytesPerToken: bytes,
          async run(ctx) {
            const h = ctx.fresh(settings, { recordQueries: true });
            try {
              if (ctx.prefix > 0) h.model.prefill(ctx.ids.slice(0, ctx.prefix), { chunkSize: ctx.chunk, logits: 'none' });
              h.backend.attentionOptions = undefined;
              h.backend.sequence.evict(make(Math.max(1, Math.round(ratio * ctx.prefix)), positions), { ratio });
              const kept = h.backend.rows() / (ctx.prefix * ctx.dims.layers * ctx.dims.kvHeads);
              if (positions === 'rank') h.backend.attentionOptions = { positions };
              return { logits: ctx.scoreRest(h.model), keptFraction: kept };
            } finally {
              h.release();
            }
          },
        });
      }
    }
  }
  return methods;
}

/** protected rows for a budget of `keep` rows per stream, as methods.ts's post-RoPE eviction rows */
function protectFor(keep: number): { sinks: number; recent: number } {
  return { sinks: Math.min(4, Math.floor(keep / 4)), recent: Math.min(16, Math.floor(keep / 4)) };
}
