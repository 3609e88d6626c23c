// `npm run demo -- --model NAME`: a real llama2.c checkpoint generating text over three
// caches side by side: f32 storage (the reference), a quantized cache, and an f32 cache
// compacted by Attention Matching after self-study (the model continues the context a few
// times while attention records its queries; the continuations are rolled back). Each cache
// gets the same context from the model's evaluation text, then greedy decoding continues it.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Compactor, KVCache, type KVCacheOptions, type Storage } from '../../lib/index';
import { loadCheckpoint } from '../llama2c/checkpoint';
import { KVCacheAttention, type CacheSettings } from '../llama2c/kvcache-attention';
import { argmax } from '../llama2c/math';
import { attentionDims, Transformer } from '../llama2c/model';
import { MODELS, SHARED_DIR, sharedModel } from '../llama2c/paths';
import { Sampler } from '../llama2c/sampler';
import { BOS, Tokenizer } from '../llama2c/tokenizer';
import type { Progress } from '../shared/progress';
import { UsageError } from '../shared/cli';
import { columns, formatBytes, table } from './output';

/** Context and new tokens per shared model (llama2c/paths.ts has their files); shakes64 reads characters. */
export const DEMO_LENGTHS: Record<keyof typeof MODELS, { context: number; steps: number }> = {
  stories260K: { context: 200, steps: 100 },
  shakes64: { context: 256, steps: 150 },
};

export interface ModelArgs {
  /** a name of MODELS or a checkpoint file */
  model: string;
  tokenizer?: string;
  /** the context; default: the start of the model's evaluation text */
  text?: string;
  context?: number;
  steps?: number;
  keys: Storage;
  values: Storage;
  groupSize?: number;
  rotate: boolean;
  /** fraction of rows the compacted cache keeps */
  keep: number;
}

interface Variant {
  label: string;
  settings: CacheSettings;
  compact: boolean;
}

interface Prepared {
  backend: KVCacheAttention;
  model: Transformer;
  /** logits after the context */
  first: Float32Array;
  contextRows: number;
  note: string;
}

const SELF_STUDY = { continuations: 8, length: 32 };

function resolveFiles(a: ModelArgs): { model: string; tokenizer: string; text?: string; context: number; steps: number } {
  const known = sharedModel(a.model);
  if (known) {
    const lengths = DEMO_LENGTHS[known.name as keyof typeof MODELS];
    return {
      model: known.model,
      tokenizer: a.tokenizer ?? known.tokenizer,
      text: known.passages,
      context: a.context ?? lengths.context,
      steps: a.steps ?? lengths.steps,
    };
  }
  if (!existsSync(a.model)) {
    throw new UsageError(`--model takes ${Object.keys(MODELS).join(' or ')} (in ${path.join(SHARED_DIR, 'models')}) or a checkpoint file; '${a.model}' is neither`);
  }
  if (!a.tokenizer) throw new UsageError('--model FILE needs --tokenizer FILE');
  return { model: path.resolve(a.model), tokenizer: path.resolve(a.tokenizer), context: a.context ?? 200, steps: a.steps ?? 100 };
}

export async function runModel(a: ModelArgs, progress: Progress): Promise<string> {
  const files = resolveFiles(a);
  progress.update(`loading ${path.basename(files.model)}…`, true);
  const checkpoint = loadCheckpoint(files.model);
  const tokenizer = Tokenizer.load(files.tokenizer, checkpoint.config.vocabSize);
  const dims = attentionDims(checkpoint.config);
  let source = a.text;
  if (source === undefined) {
    if (!files.text) throw new UsageError('--model FILE needs --text TEXT (the context)');
    source = readFileSync(files.text, 'utf8').split('<|endoftext|>')[0]!.trim();
  }
  const context = tokenizer.encode(source, { bos: true }).slice(0, files.context);
  const steps = Math.max(1, Math.min(files.steps, checkpoint.config.seqLen - context.length));

  const quantized: CacheSettings = { keys: a.keys, values: a.values, rotate: a.rotate, ...(a.groupSize ? { groupSize: a.groupSize } : {}) };
  if (a.groupSize === undefined && dims.headDim < 32) quantized.groupSize = dims.headDim;
  const variants: Variant[] = [
    { label: 'f32 cache', settings: { keys: 'f32', values: 'f32' }, compact: false },
    { label: `${describe(quantized)} cache`, settings: quantized, compact: false },
    { label: `f32 cache compacted to ${Math.round(100 * a.keep)}%`, settings: { keys: 'f32', values: 'f32' }, compact: true },
  ];

  const prepare = async (v: Variant): Promise<Prepared> => {
    const record = { recordQueries: false };
    const backend = new KVCacheAttention(dims, v.settings, record);
    const model = new Transformer(checkpoint, backend);
    model.reset();
    const first = Float32Array.from(model.prefill(context, { chunkSize: 64, logits: 'last' }));
    let note = '';
    if (v.compact) {
      // Self-study: sampled continuations with query recording on, each rolled back.
      const n = model.position;
      const sampler = new Sampler(0x5e1f + n);
      record.recordQueries = true;
      for (let c = 0; c < SELF_STUDY.continuations; c++) {
        let logits: Float32Array = first;
        for (let i = 0; i < SELF_STUDY.length; i++) logits = model.step(sampler.sample(logits));
        model.truncate(n);
      }
      record.recordQueries = false;
      const keepRows = Math.ceil(a.keep * n);
      const compactor = new Compactor({ method: 'omp', ratio: a.keep, protect: { sinks: 1, recent: Math.min(8, keepRows >> 2) } });
      const report = await compactor.compact(backend.sequence);
      note = `rows ${report.rowsBefore} → ${report.rowsAfter}, attention error ${report.meanOutputError.toFixed(3)} on the self-study queries`;
    }
    const stats = backend.cache.stats();
    return { backend, model, first, contextRows: stats.rows, note };
  };

  const results: { label: string; tokens: number[]; tokensPerSecond: number; contextBytes: number; agree: number; note: string }[] = [];
  for (const [vi, v] of variants.entries()) {
    progress.update(`[${vi + 1}/${variants.length}] ${v.label}: context of ${context.length} tokens`, true);
    let p = await prepare(v);
    const rowBytes = KVCache.bytesPerToken({ ...dims, ...v.settings } as KVCacheOptions) / (dims.layers * dims.kvHeads);
    const tokens: number[] = [];
    const t0 = performance.now();
    let logits: Float32Array = p.first;
    for (let i = 0; i < steps; i++) {
      const next = argmax(logits);
      if (next === BOS) break;
      tokens.push(next);
      progress.update(`[${vi + 1}/${variants.length}] ${v.label}: ${tokens.length}/${steps} tokens`);
      if (i + 1 < steps) logits = p.model.step(next);
    }
    const tokensPerSecond = (1000 * tokens.length) / (performance.now() - t0);
    // Top-1 agreement: the same cache, teacher-forced on the f32 cache's text.
    const ref = results[0]?.tokens ?? tokens;
    let agree = 0;
    if (vi > 0 && ref.length > 0) {
      p.backend.dispose();
      p = await prepare(v);
      const V = checkpoint.config.vocabSize;
      const forced = ref.length > 1 ? p.model.prefill(ref.slice(0, -1), { chunkSize: 64, logits: 'all' }) : new Float32Array(0);
      for (let i = 0; i < ref.length; i++) {
        const l = i === 0 ? p.first : forced.subarray((i - 1) * V, i * V);
        if (argmax(l) === ref[i]) agree++;
      }
    } else {
      agree = tokens.length;
    }
    results.push({ label: v.label, tokens, tokensPerSecond, contextBytes: p.contextRows * rowBytes, agree, note: p.note });
    p.backend.dispose();
  }
  progress.done();

  const c = checkpoint.config;
  const ref = results[0]!;
  const contextText = tokenizer.decodeAll(context);
  const lines = [
    `${path.basename(files.model)}: ${c.nLayers} layers, ${c.nKvHeads} kv heads × head_dim ${c.headDim}, ${c.nHeads} query heads. ` +
      `Context: ${context.length} tokens of ${files.text ? path.basename(files.text) : 'the given text'}; then ${steps} greedy tokens.`,
    '',
    `…${contextText.slice(-240)}`,
    '',
    columns(results.map((r) => ({ title: r.label, text: tokenizer.decodeAll(r.tokens) }))),
    '',
    table(
      ['cache', 'KV memory of the context', 'vs f32', 'tokens/s', 'top-1 agreement with f32', 'same text as f32'],
      results.map((r, i) => {
        let same = r.tokens.findIndex((t, j) => ref.tokens[j] !== t);
        if (same < 0) same = Math.min(r.tokens.length, ref.tokens.length);
        return [
          r.label,
          formatBytes(r.contextBytes),
          `${(ref.contextBytes / r.contextBytes).toFixed(2)}×`,
          r.tokensPerSecond.toFixed(0),
          i === 0 ? '(reference)' : `${r.agree}/${ref.tokens.length} (${((100 * r.agree) / Math.max(1, ref.tokens.length)).toFixed(1)}%)`,
          i === 0 ? '–' : same === ref.tokens.length ? 'all of it' : `first ${same} tokens`,
        ];
      }),
    ),
    '',
    'top-1 agreement: the argmax of each cache\'s logits against the f32 cache\'s next token, fed the f32 text.',
    ...results.filter((r) => r.note).map((r) => `${r.label}: ${r.note}.`),
  ];
  return lines.join('\n');
}

function describe(s: CacheSettings): string {
  const fmt = s.keys === s.values ? `${s.keys}` : `K ${s.keys} / V ${s.values}`;
  return `${fmt}${s.rotate ? ' rotated' : ''}${s.groupSize ? ` g${s.groupSize}` : ''}`;
}
