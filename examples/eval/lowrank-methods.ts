// Low-rank storage methods (`lowrank-...`): streaming per-stream bases at several ranks with
// f16 / int8 / int4 coefficients, and combined with eviction (H2O) and Attention Matching.
// Memory per token counts the bases, spread over the evaluation window (the bases are fixed
// per stream; at 512-token windows they are a visible share).
import { KVCache } from '../../lib/index';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { AttentionDims } from '../llama2c/model';
import type { Method, StoryContext } from './runner';
import { wholeStoryRun } from './whole-story';

/* eslint-disable @typescript-eslint/no-explicit-any -- the library namespace, as in methods.ts */
type Lib = Record<string, any>;

/** Rows each stream holds at full precision before its bases are fitted. */
export const CALIBRATION_ROWS = 128;
/** The window the bases' bytes are spread over in rowBytesPerToken. */
export const WINDOW_TOKENS = 512;

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** Ranks to evaluate for a head dimension: 3/4, 5/8, 1/2, 3/8, 5/16 and 1/4 of it (even, distinct). */
export function lowRankRanks(D: number): number[] {
  const ranks = [0.75, 0.625, 0.5, 0.375, 0.3125, 0.25].map((f) => Math.max(2, 2 * Math.round((f * D) / 2)));
  return [...new Set(ranks)].filter((r) => r < D);
}

export function lowRankSettings(D: number, rank: number, storage: 'f16' | 'int8' | 'int4', calibrationRows = CALIBRATION_ROWS): CacheSettings {
  // the quantization group divides both the rank and head_dim (the schema's rule)
  const groupSize = Math.min(32, gcd(rank, D));
  return { keys: storage, values: storage, groupSize, lowRank: { keys: rank, values: rank, calibrationRows } };
}

function bytesPerToken(dims: AttentionDims, s: CacheSettings): number {
  return KVCache.bytesPerToken({ ...s, ...dims }, WINDOW_TOKENS);
}

function keepRows(ctx: StoryContext, ratio: number): number {
  return Math.max(1, Math.round(ratio * ctx.prefix));
}

export function lowRankMethods(lib: Lib, dims: AttentionDims): Method[] {
  const methods: Method[] = [];
  const D = dims.headDim;
  const ranks = lowRankRanks(D);
  // Every rank and format with the default calibration; f16 also with twice the calibration
  // rows (how much of the loss comes from bases fitted on too few, too early rows).
  const variants = ranks.flatMap((rank) => [
    ...(['f16', 'int8', 'int4'] as const).map((storage) => ({ rank, storage, calibration: CALIBRATION_ROWS, suffix: '' })),
    { rank, storage: 'f16' as const, calibration: 2 * CALIBRATION_ROWS, suffix: `-c${2 * CALIBRATION_ROWS}` },
  ]);
  for (const { rank, storage, calibration, suffix } of variants) {
    {
      const settings = lowRankSettings(D, rank, storage, calibration);
      methods.push({
        id: `lowrank-r${rank}-${storage}${suffix}`,
        family: `low-rank ${storage} coefficients${suffix ? `, ${calibration} calibration rows` : ''}`,
        label: `rank ${rank}/${D}, ${storage} coefficients, ${calibration} calibration rows`,
        param: rank,
        rowBytesPerToken: bytesPerToken(dims, settings),
        run: wholeStoryRun(settings),
      });
    }
  }
  // Combinations at the rank closest to half of head_dim, f16 and int8 coefficients.
  const half = ranks.reduce((a, b) => (Math.abs(b - D / 2) < Math.abs(a - D / 2) ? b : a));
  for (const storage of ['f16', 'int8'] as const) {
    const settings = lowRankSettings(D, half, storage);
    const observe = { accumulateScores: true, recordQueries: true };
    for (const ratio of [0.5, 0.25]) {
      if (lib.EvictionPolicy) {
        methods.push({
          id: `lowrank-r${half}-${storage}-h2o-${ratio}`,
          family: `low-rank ${storage} + H2O eviction`,
          label: `rank ${half}/${D} ${storage}, H2O keep ${ratio * 100}%`,
          param: ratio,
          rowBytesPerToken: bytesPerToken(dims, settings),
          async run(ctx) {
            const h = ctx.fresh(settings, observe);
            try {
              h.model.prefill(ctx.ids.slice(0, ctx.prefix), { chunkSize: ctx.chunk, logits: 'none' });
              h.backend.attentionOptions = undefined;
              const keep = keepRows(ctx, ratio);
              h.backend.sequence.evict(lib.EvictionPolicy.h2o({ sinks: Math.min(4, keep >> 2), recent: Math.min(16, keep >> 2) }), { ratio });
              const kept = h.backend.rows() / (ctx.prefix * ctx.dims.layers * ctx.dims.kvHeads);
              return { logits: ctx.scoreRest(h.model), keptFraction: kept };
            } finally {
              h.release();
            }
          },
        });
      }
      if (lib.Compactor) {
        methods.push({
          id: `lowrank-r${half}-${storage}-am-${ratio}`,
          family: `low-rank ${storage} + Attention Matching`,
          label: `rank ${half}/${D} ${storage}, AM highest-attention ratio ${ratio}`,
          param: ratio,
          rowBytesPerToken: bytesPerToken(dims, settings),
          async run(ctx) {
            const h = ctx.fresh(settings, { recordQueries: true });
            try {
              h.model.prefill(ctx.ids.slice(0, ctx.prefix), { chunkSize: ctx.chunk, logits: 'none' });
              h.backend.attentionOptions = undefined;
              const keep = keepRows(ctx, ratio);
              const compactor = new lib.Compactor({ method: 'highest-attention', ratio, protect: { sinks: Math.min(4, keep >> 2), recent: Math.min(16, keep >> 2) } });
              await compactor.compact(h.backend.sequence);
              const kept = h.backend.rows() / (ctx.prefix * ctx.dims.layers * ctx.dims.kvHeads);
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
