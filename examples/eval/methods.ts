// The evaluated methods. Storage formats always; eviction policies when lib/ exports
// EvictionPolicy; Attention Matching (offline and online) when it exports Compactor.
// Registration is decided at run time from the library's exports, so the evaluation
// grows with the library without edits here.
import { KVCache, KVCacheError, type Storage } from '../../lib/index';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { AttentionDims } from '../llama2c/model';
import { Sampler } from '../llama2c/sampler';
import type { Method, MethodRun, ModelHandle, StoryContext } from './runner';
import { MODEL_ROPE, ropeMethods } from './rope-methods';
import type { AttentionCallOptions } from './sequence-attention';
import { sparseMethods } from './sparse-methods';
import { profileMethods } from './profile-methods';
import { lowRankMethods, lowRankSettings } from './lowrank-methods';
import { lowRankCurveMethods } from './lowrank-curve-methods';
import { tierMethods } from './tier-methods';
import { wholeStoryRun } from './whole-story';

/* eslint-disable @typescript-eslint/no-explicit-any -- the eviction/compaction API is typed by the library once it exists */
type Lib = Record<string, any>;

export interface MethodSetOptions {
  /** quantization group sizes to try (those that are even divisors of headDim) */
  groupSizes?: number[];
  evictionRatios?: number[];
  compactionRatios?: number[];
  /** row budgets per stream for online compaction */
  onlineBudgets?: number[];
  /** what seq.attention supports; probed on the library when not given */
  capabilities?: { accumulateScores: boolean; recordQueries: boolean };
}

export interface MethodSet {
  methods: Method[];
  /** what was left out and why (printed and written to the report) */
  notes: string[];
}

export const DEFAULT_GROUP_SIZES = [32, 64, 8, 4];
export const EVICTION_RATIOS = [0.5, 0.25, 0.1];
export const COMPACTION_RATIOS = [0.5, 0.25, 0.1, 0.05, 0.02];
export const ONLINE_BUDGETS = [128, 64, 32];

const EVICTION_POLICIES = ['slidingWindow', 'streamingLLM', 'h2o', 'snapKV', 'tova', 'keyNorm', 'random'] as const;
const AM_METHODS = ['highest-attention', 'omp'] as const;

function bytesPerToken(dims: AttentionDims, s: CacheSettings): number {
  return KVCache.bytesPerToken({ ...s, ...dims });
}

function fmt(s: CacheSettings): string {
  const kv = s.keys === s.values ? `${s.keys}` : `K ${s.keys} / V ${s.values}`;
  const rot = s.rotate === true ? ', rotated K' : typeof s.rotate === 'object' ? `, rotated ${s.rotate.keys ? 'K' : ''}${s.rotate.values ? '+V' : ''}` : '';
  return `${kv}${s.groupSize ? ` g${s.groupSize}` : ''}${rot}`;
}

/** Runs the whole story on a cache in `settings` (the prefix is not transformed). */
function storageMethod(dims: AttentionDims, id: string, family: string, settings: CacheSettings): Method {
  return {
    id,
    family,
    label: fmt(settings),
    rowBytesPerToken: bytesPerToken(dims, settings),
    run: wholeStoryRun(settings),
  };
}

/**
 * precision 'fast' on a cache in `settings`: the story runs twice on the same settings, exact
 * and fast, so the runner reports ΔNLL and top-1 agreement against exact as well as against f32.
 */
function fastMethod(dims: AttentionDims, id: string, settings: CacheSettings): Method {
  const exact = storageMethod(dims, id, 'storage, precision fast', settings);
  const fast = storageMethod(dims, id, 'storage, precision fast', { ...settings, precision: 'fast' });
  return {
    ...fast,
    label: `${fast.label}, fast`,
    async run(ctx: StoryContext): Promise<MethodRun> {
      const reference = await exact.run(ctx);
      const r = await fast.run(ctx);
      return { ...r, exact: reference.logits };
    },
  };
}

/** Does seq.attention accept this option (true), or is it not available yet? */
function attentionSupports(option: 'accumulateScores' | 'recordQueries'): boolean {
  const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, keys: 'f32', values: 'f32', threads: 1 });
  try {
    const seq = cache.createSequence();
    seq.append(0, new Float32Array(8).fill(0.5), new Float32Array(8).fill(0.25));
    seq.attention(0, new Float32Array(8).fill(1), { [option]: true });
    return true;
  } catch (err) {
    if (err instanceof KVCacheError && (err.code === 'UNSUPPORTED' || err.code === 'INVALID_ARGUMENT')) return false;
    throw err;
  } finally {
    cache.dispose();
  }
}

function rowsHeld(ctx: StoryContext, h: { backend: { rows(): number } }): number {
  return h.backend.rows() / (ctx.prefix * ctx.dims.layers * ctx.dims.kvHeads);
}

/** protected rows for a budget of `keep` rows per stream: at most a quarter each for sinks and recent rows */
function protectFor(keep: number): { sinks: number; recent: number } {
  return { sinks: Math.min(4, Math.floor(keep / 4)), recent: Math.min(16, Math.floor(keep / 4)) };
}

/** the story-dependent number of rows a ratio keeps of the prefix */
function keepRows(ctx: StoryContext, ratio: number): number {
  return Math.max(1, Math.round(ratio * ctx.prefix));
}

function evictionMethods(lib: Lib, dims: AttentionDims, base: CacheSettings, ratios: number[], observe: AttentionCallOptions): Method[] {
  const EP = lib.EvictionPolicy;
  // Parameters scale with the rows kept (these prefixes hold ~50-250 rows per stream):
  // protected sinks/recent rows take at most half of the budget.
  const make: Record<(typeof EVICTION_POLICIES)[number], (keep: number) => unknown> = {
    slidingWindow: (keep) => EP.slidingWindow({ window: keep }),
    streamingLLM: (keep) => EP.streamingLLM({ sinks: Math.min(4, keep >> 1), window: keep - Math.min(4, keep >> 1) }),
    h2o: (keep) => EP.h2o(protectFor(keep)),
    snapKV: (keep) => EP.snapKV({ window: 8, pool: 3, ...protectFor(keep) }),
    tova: (keep) => EP.tova(protectFor(keep)),
    keyNorm: (keep) => EP.keyNorm(protectFor(keep)),
    random: (keep) => EP.random(1234, protectFor(keep)),
  };
  const methods: Method[] = [];
  for (const policy of EVICTION_POLICIES) {
    if (typeof EP?.[policy] !== 'function') continue;
    for (const ratio of ratios) {
      methods.push({
        id: `evict-${policy}-${ratio}`,
        family: `evict ${policy}`,
        label: `${policy}, keep ${ratio * 100}%`,
        param: ratio,
        rowBytesPerToken: bytesPerToken(dims, base),
        async run(ctx) {
          const h = ctx.forkPrefix(observe);
          try {
            await h.backend.sequence.evict(make[policy](keepRows(ctx, ratio)) as never, { ratio });
            const kept = rowsHeld(ctx, h);
            return { logits: ctx.scoreRest(h.model), keptFraction: kept };
          } finally {
            h.release();
          }
        },
      });
    }
  }
  return methods;
}


const SOURCE_LABEL = { prefill: 'prefill', repeat: 'repeat-prefill', 'self-study': 'self-study' } as const;

/** Self-study continuations: how many, and how many tokens each. */
const SELF_STUDY = { continuations: 8, length: 64 };

/**
 * Self-study reference queries: the model continues the prefix several times (sampled at
 * temperature 1, seeded by the story) with query recording on, and each continuation is
 * rolled back: the queries stay, the rows go.
 */
function recordSelfStudy(ctx: StoryContext, h: ModelHandle, record: AttentionCallOptions | undefined): void {
  const p = ctx.prefix;
  // The logits after the prefix: its last token once more (not recorded).
  h.model.truncate(p - 1);
  const first = h.model.step(ctx.ids[p - 1]!);
  const sampler = new Sampler(0x5e1f + p * 7919 + ctx.ids.length);
  h.backend.attentionOptions = record;
  for (let c = 0; c < SELF_STUDY.continuations; c++) {
    let logits = first;
    for (let i = 0; i < SELF_STUDY.length; i++) logits = h.model.step(sampler.sample(logits));
    h.model.truncate(p);
  }
  h.backend.attentionOptions = undefined;
}

function compactionMethods(
  lib: Lib, dims: AttentionDims, base: CacheSettings, ratios: number[], budgets: number[], record: AttentionCallOptions | undefined,
): Method[] {
  const Compactor = lib.Compactor;
  const methods: Method[] = [];
  for (const method of AM_METHODS) {
    for (const source of ['prefill', 'repeat', 'self-study'] as const) {
      for (const ratio of ratios) {
        methods.push({
          id: `am-${method}-${source}-${ratio}`,
          family: `AM ${method}, ${SOURCE_LABEL[source]} queries`,
          label: `${method}, ${source} queries, ratio ${ratio}`,
          param: ratio,
          rowBytesPerToken: bytesPerToken(dims, base),
          async run(ctx) {
            const h = ctx.forkPrefix(source === 'prefill' ? record : undefined);
            try {
              if (source === 'repeat') {
                // Run the prefix through the model again with query recording on, then roll
                // the repeated tokens back: the queries stay, the rows go.
                h.backend.attentionOptions = record;
                h.model.prefill(ctx.ids.slice(0, ctx.prefix), { chunkSize: ctx.chunk, logits: 'none' });
                h.model.truncate(ctx.prefix);
                h.backend.attentionOptions = undefined;
              } else if (source === 'self-study') {
                recordSelfStudy(ctx, h, record);
              }
              const compactor = new Compactor({ method, ratio, protect: protectFor(keepRows(ctx, ratio)) });
              await compactor.compact(h.backend.sequence);
              const kept = rowsHeld(ctx, h);
              return { logits: ctx.scoreRest(h.model), keptFraction: kept };
            } finally {
              h.release();
            }
          },
        });
      }
    }
  }
  // The same self-study compaction of a cache holding keys before RoPE (cache option rope):
  // the fit runs on rotated logits and keeps the pre-RoPE rows (docs/rope-compaction.md).
  // Also over pre-RoPE low-rank keys (rank headDim/2, f16 coefficients; `-lr` methods).
  const ropeVariants = [
    { tag: '', what: 'keys before RoPE', settings: { ...base, rope: MODEL_ROPE } as CacheSettings },
    { tag: '-lr', what: `rank ${dims.headDim / 2} keys and values, keys before RoPE`, settings: { ...lowRankSettings(dims.headDim, dims.headDim / 2, 'f16'), rope: MODEL_ROPE } as CacheSettings },
  ];
  for (const { tag, what, settings } of ropeVariants) for (const method of AM_METHODS) {
    for (const ratio of ratios.filter((r) => r === 0.25 || r === 0.1)) {
      methods.push({
        id: `am-${method}-self-study-rope${tag}-${ratio}`,
        family: `AM ${method}, self-study queries, ${what}`,
        label: `${method}, self-study queries, ${what}, ratio ${ratio}`,
        param: ratio,
        rowBytesPerToken: bytesPerToken(dims, settings),
        async run(ctx) {
          const h = ctx.fresh(settings);
          try {
            h.model.prefill(ctx.ids.slice(0, ctx.prefix), { chunkSize: ctx.chunk, logits: 'none' });
            recordSelfStudy(ctx, h, record);
            const compactor = new Compactor({ method, ratio, protect: protectFor(keepRows(ctx, ratio)) });
            await compactor.compact(h.backend.sequence);
            const kept = rowsHeld(ctx, h);  // before scoreRest appends the rest of the story
            return { logits: ctx.scoreRest(h.model), keptFraction: kept };
          } finally {
            h.release();
          }
        },
      });
    }
  }
  for (const budget of budgets) {
    methods.push({
      id: `am-online-${budget}`,
      family: 'AM online, row budget',
      label: `online highest-attention, ≤ ${budget} rows per stream`,
      param: budget,
      rowBytesPerToken: bytesPerToken(dims, base),
      run: (ctx) => onlineCompaction(ctx, Compactor, base, budget, record),
    });
  }
  return methods;
}

/**
 * Online compaction: the whole story runs through one cache with query recording on, in
 * chunks of 16 tokens; whenever a stream holds more than `budget` rows, the sequence is
 * compacted to half the budget (recent rows protected). keptFraction is the mean, over
 * the scored positions, of rows held / positions seen.
 */
async function onlineCompaction(
  ctx: StoryContext, Compactor: any, base: CacheSettings, budget: number, record: AttentionCallOptions | undefined,
): Promise<MethodRun> {
  const step = 16;
  const h = ctx.fresh(base, record);
  const { ids, prefix: p } = ctx;
  const n = ids.length;
  const V = ctx.checkpoint.config.vocabSize;
  const logits = new Float32Array((n - 1 - p) * V);
  const streams = ctx.dims.layers * ctx.dims.kvHeads;
  let fractionSum = 0;
  try {
    for (let t = 0; t < n - 1; ) {
      // chunks never straddle p, so scored positions start a chunk
      const end = Math.min(n - 1, t < p ? Math.min(p, t + step) : t + step);
      const out = h.model.forward(ids.slice(t, end), end > p ? 'all' : 'none');
      if (end > p) {
        logits.set(out, (t - p) * V);
        fractionSum += (h.backend.rows() / streams / end) * (end - t);
      }
      t = end;
      let longest = 0;
      for (let l = 0; l < ctx.dims.layers; l++) for (const len of h.backend.sequence.lengths(l)) longest = Math.max(longest, len);
      if (longest > budget) {
        const target = Math.floor(budget / 2);
        const compactor = new Compactor({ method: 'highest-attention', ratio: target / longest, protect: { sinks: 2, recent: Math.min(16, target >> 2) } });
        await compactor.compact(h.backend.sequence);
      }
    }
    return { logits, keptFraction: fractionSum / (n - 1 - p) };
  } finally {
    h.release();
  }
}

/**
 * Every method the library supports today, for a model of these dims.
 * `lib` is the library's module namespace (import * as kv from '../lib/index').
 */
export function buildMethods(lib: Lib, dims: AttentionDims, base: CacheSettings, options: MethodSetOptions = {}): MethodSet {
  const notes: string[] = [];
  const methods: Method[] = [];
  const D = dims.headDim;
  const pow2 = (D & (D - 1)) === 0;

  methods.push(storageMethod(dims, 'f32', 'storage', { keys: 'f32', values: 'f32' }));
  methods.push(storageMethod(dims, 'f16', 'storage', { keys: 'f16', values: 'f16' }));
  methods.push(storageMethod(dims, 'bf16', 'storage', { keys: 'bf16', values: 'bf16' }));

  const groups: number[] = [];
  for (const g of options.groupSizes ?? DEFAULT_GROUP_SIZES) {
    if (g % 2 === 0 && D % g === 0 && g <= D) groups.push(g);
    else notes.push(`groupSize ${g} skipped: quantization groups must be even divisors of head_dim (${D})`);
  }
  for (const [gi, g] of groups.entries()) {
    for (const q of ['int8', 'int4'] as Storage[]) {
      methods.push(storageMethod(dims, `${q}-g${g}`, 'storage', { keys: q, values: q, groupSize: g }));
      if (!pow2) continue;
      methods.push(storageMethod(dims, `${q}-g${g}-rk`, 'storage, rotated keys', { keys: q, values: q, groupSize: g, rotate: true }));
      // keys and values rotated: only for the first (widest) group size, to keep the run short
      if (gi === 0) {
        methods.push(storageMethod(dims, `${q}-g${g}-rkv`, 'storage, rotated keys + values', { keys: q, values: q, groupSize: g, rotate: { keys: true, values: true } }));
      }
    }
  }
  if (!pow2) notes.push(`rotation skipped: head_dim ${D} is not a power of two`);
  if (groups.length > 0) {
    const g = groups[0]!;
    methods.push(storageMethod(dims, `k8v4-g${g}-rk`, 'storage, rotated keys', { keys: 'int8', values: 'int4', groupSize: g, rotate: pow2 }));
  }
  // precision 'fast' (integer dot products on int8 / int4 keys) at the widest group size.
  if (groups.length > 0) {
    const g = groups[0]!;
    for (const q of ['int8', 'int4'] as Storage[]) methods.push(fastMethod(dims, `${q}-g${g}-fast`, { keys: q, values: q, groupSize: g }));
    methods.push(fastMethod(dims, `k8v4-g${g}-rk-fast`, { keys: 'int8', values: 'int4', groupSize: g, rotate: pow2 }));
  }

  methods.push(...sparseMethods(dims));
  methods.push(...profileMethods(dims));
  if (groups.length > 0) methods.push(...tierMethods(dims, groups[0]!, pow2));
  const lowRank = lowRankMethods(lib, dims);
  methods.push(...lowRank);
  notes.push(`low-rank: ${lowRank.length} methods (ranks × coefficient formats, and with H2O / Attention Matching)`);
  const curve = lowRankCurveMethods(dims);
  methods.push(...curve);
  if (curve.length) notes.push(`low-rank curve: ${curve.length} methods (key rank × format × keys before / after RoPE × values low-rank or unprojected)`);

  const baseLabel = fmt(base);
  const caps = (): { accumulateScores: boolean; recordQueries: boolean } =>
    options.capabilities ?? { accumulateScores: attentionSupports('accumulateScores'), recordQueries: attentionSupports('recordQueries') };
  if ('EvictionPolicy' in lib) {
    const { accumulateScores: scores, recordQueries: queries } = caps();
    if (!scores) notes.push('seq.attention({ accumulateScores }) is not available: score-based policies run without accumulated scores');
    const observe: AttentionCallOptions = {};
    if (scores) observe.accumulateScores = true;
    if (queries) observe.recordQueries = true;
    const ev = evictionMethods(lib, dims, base, options.evictionRatios ?? EVICTION_RATIOS, observe);
    methods.push(...ev);
    notes.push(`eviction: ${ev.length} methods over a ${baseLabel} cache (policies × keep ratios), applied once after the prefix`);
  } else {
    notes.push('eviction: not evaluated (lib/ does not export EvictionPolicy yet)');
  }
  {
    const rm = ropeMethods(lib, dims, base, options.evictionRatios ?? EVICTION_RATIOS);
    methods.push(...rm);
    notes.push(`rope: ${rm.length} methods over a ${baseLabel} cache holding keys before RoPE (the cache applies RoPE; streamingLLM, snapKV and tova with positions as stored or re-indexed)`);
  }
  if ('Compactor' in lib) {
    const queries = caps().recordQueries;
    if (!queries) notes.push('seq.attention({ recordQueries }) is not available: compaction runs without recorded queries');
    const record: AttentionCallOptions | undefined = queries ? { recordQueries: true } : undefined;
    const cm = compactionMethods(lib, dims, base, options.compactionRatios ?? COMPACTION_RATIOS, options.onlineBudgets ?? ONLINE_BUDGETS, record);
    methods.push(...cm);
    notes.push(`compaction: ${cm.length} methods over a ${baseLabel} cache (Attention Matching offline and online)`);
  } else {
    notes.push('compaction: not evaluated (lib/ does not export Compactor yet)');
  }
  return { methods, notes };
}
