// `npm run demo`: what kvcompact's storage formats cost and save.
//
// Default (no files needed): one Llama-3-8B-shaped layer (8 kv heads × head_dim 128,
// 32 query heads). Synthetic LLM-like keys/values are appended in prefill chunks, then
// decode steps (append one token + attention of one query token) are timed, for f32
// (the reference) and compressed storage. Prints bytes per token, decode attention time
// and the error of the attention output against f32 storage.
//
// With --model: greedy generation on a real llama2.c checkpoint (default stories260K),
// an f32 cache side by side with a compressed one (default keys int8, values int4, rotated).
import { parseArgs } from 'node:util';
import path from 'node:path';
import { KVCache, type KVCacheOptions, type Storage } from '../lib/index';
import { MODEL_PATH, TOKENIZER_PATH } from './llama2c/paths';
import { formatSeconds, Progress, Rng } from './shared/progress';

const DEFAULT_MODEL = MODEL_PATH;
const DEFAULT_TOKENIZER = TOKENIZER_PATH;

const USAGE = `usage: npm run demo -- [options]

Synthetic Llama-3-8B-shaped layer (default):
  --tokens N        context tokens appended before decoding (default 4096)
  --steps N         timed decode steps (default 64; with --model: new tokens, default 120)
  --threads N       CPU threads for attention (default: all)
  --chunk N         prefill chunk (default 512)

Real checkpoint:
  --model [FILE]    llama2.c checkpoint (default ../shared/models/stories260K.bin)
  --tokenizer FILE  (default ../shared/models/tok512.bin)
  --text TEXT       prompt (default "Once upon a time")
  --keys F --values F   compressed cache storage: f32 f16 bf16 int8 int4 (default int8 / int4)
  --group-size N    quantization group (default min(32, head_dim))
  --rotate / --no-rotate  Hadamard rotation of the keys (default on)

Prefix store (a second request reuses a compacted document):
  --store           see npm run demo -- --store --help
`;

// ---------------------------------------------------------------- synthetic layer

interface Format {
  name: string;
  options: Partial<KVCacheOptions>;
}

const SYNTHETIC_FORMATS: Format[] = [
  { name: 'f32', options: { keys: 'f32', values: 'f32' } },
  { name: 'f16', options: { keys: 'f16', values: 'f16' } },
  { name: 'bf16', options: { keys: 'bf16', values: 'bf16' } },
  { name: 'int8', options: { keys: 'int8', values: 'int8' } },
  { name: 'int8 rotated', options: { keys: 'int8', values: 'int8', rotate: true } },
  { name: 'K int8 / V int4 rotated', options: { keys: 'int8', values: 'int4', rotate: true } },
  { name: 'int4', options: { keys: 'int4', values: 'int4' } },
  { name: 'int4 rotated', options: { keys: 'int4', values: 'int4', rotate: true } },
];

const SHAPE = { kvHeads: 8, headDim: 128, queryHeads: 32 } as const;
const MODEL_LAYERS = 32;

/**
 * LLM-like keys and values for T tokens, [T, kvHeads, headDim]: Gaussian with a per-channel
 * offset, two large outlier channels per head in the keys (as real post-RoPE keys have), and an
 * attention sink at position 0 (a key aligned with the queries' mean direction).
 */
function syntheticKV(T: number, rng: Rng, queryMean: Float32Array): { keys: Float32Array; values: Float32Array } {
  const { kvHeads: H, headDim: D } = SHAPE;
  const offset = new Float32Array(H * D);
  for (let i = 0; i < offset.length; i++) offset[i] = 0.5 * rng.gaussian();
  const outlier = new Float32Array(H * D).fill(1);
  for (let h = 0; h < H; h++) {
    outlier[h * D + ((7 * h + 3) % D)] = 12;
    outlier[h * D + ((13 * h + 77) % D)] = 8;
  }
  const keys = new Float32Array(T * H * D);
  const values = new Float32Array(T * H * D);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < H * D; i++) {
      keys[t * H * D + i] = outlier[i]! * (rng.gaussian() + offset[i]!);
      values[t * H * D + i] = rng.gaussian();
    }
  }
  for (let h = 0; h < H; h++) {
    for (let d = 0; d < D; d++) keys[h * D + d] = 6 * queryMean[d]!; // sink
  }
  return { keys, values };
}

function syntheticQueries(steps: number, rng: Rng, queryMean: Float32Array): Float32Array {
  const { queryHeads: Q, headDim: D } = SHAPE;
  const q = new Float32Array(steps * Q * D);
  for (let i = 0; i < q.length; i++) q[i] = rng.gaussian() + queryMean[i % D]!;
  return q;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface SyntheticRow {
  name: string;
  bytesPerToken: number;
  modelBytesPerToken: number;
  appendMs: number;
  decodeUs: number;
  maxAbsDiff: number;
  relErr: number;
}

function runSynthetic(tokens: number, steps: number, chunk: number, threads: number | undefined): void {
  const progress = new Progress();
  const t0 = performance.now();
  const rng = new Rng(20240611);
  const queryMean = new Float32Array(SHAPE.headDim);
  for (let d = 0; d < SHAPE.headDim; d++) queryMean[d] = 0.7 * rng.gaussian();
  progress.update('generating synthetic keys and values…', true);
  const { keys, values } = syntheticKV(tokens + steps, rng, queryMean);
  const queries = syntheticQueries(steps, rng, queryMean);
  const rowElems = SHAPE.kvHeads * SHAPE.headDim;
  const qElems = SHAPE.queryHeads * SHAPE.headDim;

  const rows: SyntheticRow[] = [];
  let reference: Float32Array | undefined;
  let refMax = 0;
  for (const [fi, format] of SYNTHETIC_FORMATS.entries()) {
    const options: KVCacheOptions = { layers: 1, ...SHAPE, ...format.options, ...(threads ? { threads } : {}) };
    const cache = new KVCache(options);
    const seq = cache.createSequence();
    const label = `[${fi + 1}/${SYNTHETIC_FORMATS.length}] ${format.name}`;
    const a0 = performance.now();
    for (let t = 0; t < tokens; t += chunk) {
      const end = Math.min(tokens, t + chunk);
      seq.append(0, keys.subarray(t * rowElems, end * rowElems), values.subarray(t * rowElems, end * rowElems));
      progress.update(`${label}: prefill ${end}/${tokens} tokens`);
    }
    const appendMs = performance.now() - a0;
    const outputs = new Float32Array(steps * qElems);
    const times: number[] = [];
    for (let s = 0; s < steps; s++) {
      const t = tokens + s;
      seq.append(0, keys.subarray(t * rowElems, (t + 1) * rowElems), values.subarray(t * rowElems, (t + 1) * rowElems));
      const out = outputs.subarray(s * qElems, (s + 1) * qElems);
      const q = queries.subarray(s * qElems, (s + 1) * qElems);
      const b = performance.now();
      seq.attention(0, q, { out });
      times.push((performance.now() - b) * 1000);
      progress.update(`${label}: decode step ${s + 1}/${steps}`);
    }
    const stats = cache.stats();
    if (!reference) {
      reference = outputs;
      for (const v of outputs) refMax = Math.max(refMax, Math.abs(v));
    }
    let maxAbsDiff = 0;
    for (let i = 0; i < outputs.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(outputs[i]! - reference[i]!));
    rows.push({
      name: format.name,
      bytesPerToken: stats.bytesPerToken,
      modelBytesPerToken: KVCache.bytesPerToken({ ...options, layers: MODEL_LAYERS }),
      appendMs,
      decodeUs: median(times),
      maxAbsDiff,
      relErr: maxAbsDiff / refMax,
    });
    cache.dispose();
  }
  progress.done();

  const threadsUsed = threads ?? KVCache.devices().cpu.threads;
  console.log(
    `kvcompact demo: one Llama-3-8B-shaped layer (${SHAPE.kvHeads} kv heads × head_dim ${SHAPE.headDim}, ` +
      `${SHAPE.queryHeads} query heads), ${tokens} context tokens, ${steps} decode steps, ` +
      `${threadsUsed} thread${threadsUsed === 1 ? '' : 's'} (${KVCache.devices().cpu.simd})\n`,
  );
  const f32 = rows[0]!;
  printTable(
    ['storage (keys/values)', 'bytes/token 1 layer', 'bytes/token 32 layers', 'vs f32', 'prefill append ms', 'decode attention µs (median)', 'max |Δ| vs f32', 'max |Δ| / max |out|'],
    rows.map((r) => [
      r.name,
      String(Math.round(r.bytesPerToken)),
      formatBytes(r.modelBytesPerToken),
      `${(f32.bytesPerToken / r.bytesPerToken).toFixed(2)}×`,
      r.appendMs.toFixed(1),
      r.decodeUs.toFixed(0),
      r.name === 'f32' ? '0 (reference)' : r.maxAbsDiff.toExponential(2),
      r.name === 'f32' ? '–' : r.relErr.toExponential(2),
    ]),
  );
  const t4k = rows.find((r) => r.name === 'K int8 / V int4 rotated');
  if (t4k) {
    const ctx = 128 * 1024;
    console.log(
      `\nA 32-layer model at ${ctx / 1024}K tokens of context: ${formatBytes(f32.modelBytesPerToken * ctx)} of KV in f32, ` +
        `${formatBytes(rows[1]!.modelBytesPerToken * ctx)} in f16, ${formatBytes(t4k.modelBytesPerToken * ctx)} with keys int8 / values int4.`,
    );
  }
  console.log(`(done in ${formatSeconds(performance.now() - t0)}; try --model for a real checkpoint)`);
}

// ---------------------------------------------------------------- real checkpoint

async function runModel(o: Record<string, string | boolean | undefined>, steps: number): Promise<void> {
  const { loadCheckpoint } = await import('./llama2c/checkpoint');
  const { Tokenizer } = await import('./llama2c/tokenizer');
  const { attentionDims, Transformer } = await import('./llama2c/model');
  const { KVCacheAttention } = await import('./llama2c/kvcache-attention');
  const { generateGreedy } = await import('./llama2c/generate');
  const { argmax } = await import('./llama2c/math');

  const modelFile = typeof o.model === 'string' && o.model !== '' ? path.resolve(o.model) : DEFAULT_MODEL;
  const tokFile = typeof o.tokenizer === 'string' ? path.resolve(o.tokenizer) : DEFAULT_TOKENIZER;
  const checkpoint = loadCheckpoint(modelFile);
  const tokenizer = Tokenizer.load(tokFile, checkpoint.config.vocabSize);
  const dims = attentionDims(checkpoint.config);
  const prompt = tokenizer.encode(typeof o.text === 'string' ? o.text : 'Once upon a time', { bos: true });
  const maxSteps = Math.max(1, Math.min(steps, checkpoint.config.seqLen - prompt.length));

  const compressed: Record<string, unknown> = {
    keys: (o.keys as Storage | undefined) ?? 'int8',
    values: (o.values as Storage | undefined) ?? 'int4',
    rotate: o.rotate !== false,
  };
  if (typeof o['group-size'] === 'string') compressed.groupSize = positiveInt('group-size', o['group-size']);
  const variants = [
    { label: 'f32 cache', settings: { keys: 'f32', values: 'f32' } as Record<string, unknown> },
    { label: describe(compressed), settings: compressed },
  ];

  const progress = new Progress();
  const results: { label: string; tokens: number[]; logits: Float32Array[]; ms: number; bpt: number; statsBpt: number }[] = [];
  for (const v of variants) {
    const backend = new KVCacheAttention(dims, v.settings);
    const model = new Transformer(checkpoint, backend);
    const logits: Float32Array[] = [];
    const t0 = performance.now();
    const tokens = generateGreedy(model, prompt, maxSteps, {
      onToken: () => progress.update(`${v.label}: ${logits.length + 1}/${maxSteps} tokens`),
    });
    const ms = performance.now() - t0;
    const statsBpt = backend.cache.stats().bytesPerToken;
    const bpt = KVCache.bytesPerToken({ ...v.settings, ...dims } as KVCacheOptions);
    // Teacher-forced logits over the f32 cache's text, for top-1 agreement.
    const forced = results[0]?.tokens ?? tokens;
    model.reset();
    const all = model.prefill([...prompt, ...forced].slice(0, prompt.length + forced.length - 1), { logits: 'all' });
    const V = checkpoint.config.vocabSize;
    for (let i = prompt.length - 1; i < prompt.length - 1 + forced.length; i++) logits.push(all.subarray(i * V, (i + 1) * V));
    results.push({ label: v.label, tokens, logits, ms, bpt, statsBpt });
    backend.dispose();
  }
  progress.done();

  const [ref, cmp] = results as [(typeof results)[0], (typeof results)[0]];
  let agree = 0;
  for (let i = 0; i < ref.logits.length; i++) if (argmax(ref.logits[i]!) === argmax(cmp.logits[i]!)) agree++;
  let diverge = ref.tokens.findIndex((t, i) => cmp.tokens[i] !== t);
  if (diverge < 0 && cmp.tokens.length !== ref.tokens.length) diverge = Math.min(ref.tokens.length, cmp.tokens.length);

  const c = checkpoint.config;
  const f16Bpt = KVCache.bytesPerToken({ ...dims, keys: 'f16', values: 'f16' });
  console.log(
    `${path.basename(modelFile)}: ${c.nLayers} layers, ${c.nKvHeads} kv heads × head_dim ${c.headDim}, ${c.nHeads} query heads; ` +
      `greedy, ${maxSteps} new tokens\n`,
  );
  const text = (r: (typeof results)[0]): string => tokenizer.decodeAll([...prompt, ...r.tokens]);
  sideBySide(ref.label, text(ref), cmp.label, text(cmp));
  console.log('');
  printTable(
    ['cache', 'bytes/token (model)', 'bytes/token (stats)', 'tokens/s', 'top-1 agreement with f32'],
    results.map((r, i) => [
      r.label,
      String(Math.round(r.bpt)),
      String(Math.round(r.statsBpt)),
      ((r.tokens.length * 1000) / r.ms).toFixed(0),
      i === 0 ? '(reference)' : `${agree}/${ref.logits.length} (${((100 * agree) / ref.logits.length).toFixed(1)}%)`,
    ]),
  );
  console.log(
    `\n${cmp.label}: ${(ref.bpt / cmp.bpt).toFixed(2)}× less KV memory than f32, ${(f16Bpt / cmp.bpt).toFixed(2)}× less than f16` +
      (diverge < 0 ? ', and exactly the same greedy text.' : `; the greedy texts first differ at new token ${diverge + 1}.`),
  );
  console.log('(top-1 agreement: argmax of the compressed cache\'s logits vs the f32 cache\'s, teacher-forced on the f32 text)');
}

function describe(s: Record<string, unknown>): string {
  const fmt = s.keys === s.values ? `${s.keys}` : `K ${s.keys} / V ${s.values}`;
  return `${fmt}${s.rotate ? ' rotated' : ''}${s.groupSize ? ` g${s.groupSize}` : ''} cache`;
}

// ---------------------------------------------------------------- output helpers

function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  for (const para of text.split('\n')) {
    let line = '';
    for (const word of para.split(' ')) {
      if (line.length > 0 && line.length + 1 + word.length > width) {
        out.push(line);
        line = word;
      } else {
        line = line.length > 0 ? `${line} ${word}` : word;
      }
      while (line.length > width) {
        out.push(line.slice(0, width));
        line = line.slice(width);
      }
    }
    out.push(line);
  }
  return out;
}

function sideBySide(leftTitle: string, left: string, rightTitle: string, right: string): void {
  const total = Math.max(60, Math.min(160, process.stdout.columns ?? 120));
  const w = Math.floor((total - 3) / 2);
  const a = [leftTitle, '-'.repeat(Math.min(w, leftTitle.length)), ...wrap(left, w)];
  const b = [rightTitle, '-'.repeat(Math.min(w, rightTitle.length)), ...wrap(right, w)];
  for (let i = 0; i < Math.max(a.length, b.length); i++) console.log(`${(a[i] ?? '').padEnd(w)} │ ${b[i] ?? ''}`);
}

function positiveInt(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`);
  return n;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  if (process.argv.includes('--store')) {
    const { runStoreDemo } = await import('./store/demo-store');
    return runStoreDemo(process.argv.slice(2).filter((a) => a !== '--store'));
  }
  // `--model` may come without a value: it then means the default checkpoint.
  const argv = process.argv.slice(2);
  const mi = argv.indexOf('--model');
  if (mi >= 0 && (mi === argv.length - 1 || argv[mi + 1]!.startsWith('--'))) argv.splice(mi + 1, 0, '');
  const { values: o } = parseArgs({
    args: argv,
    allowNegative: true,
    options: {
      tokens: { type: 'string' },
      steps: { type: 'string' },
      threads: { type: 'string' },
      chunk: { type: 'string' },
      model: { type: 'string' },
      tokenizer: { type: 'string' },
      text: { type: 'string' },
      keys: { type: 'string' },
      values: { type: 'string' },
      'group-size': { type: 'string' },
      rotate: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (o.help) {
    console.log(USAGE);
    return;
  }
  if (o.model !== undefined || o.tokenizer !== undefined || o.text !== undefined) {
    await runModel(o, o.steps ? positiveInt('steps', o.steps) : 120);
    return;
  }
  runSynthetic(
    o.tokens ? positiveInt('tokens', o.tokens) : 4096,
    o.steps ? positiveInt('steps', o.steps) : 64,
    o.chunk ? positiveInt('chunk', o.chunk) : 512,
    o.threads ? positiveInt('threads', o.threads) : undefined,
  );
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
