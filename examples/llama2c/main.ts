// Command line for the llama2.c example runner: greedy generation or windowed NLL,
// over the plain-JS reference attention or over a kvcompact cache in any storage format.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from './checkpoint';
import { generateGreedy, nll } from './generate';
import { attentionDims, Transformer, type AttentionBackend } from './model';
import { MODELS, sharedModel } from './paths';
import { ReferenceAttention } from './reference-attention';
import { Tokenizer } from './tokenizer';

const USAGE = `usage: tsx examples/llama2c/main.ts [generate|nll] [options]

  generate            greedy decoding (default)
    --prompt TEXT       default the model's README prompt ("Once upon a time", "ROMEO:")
    --steps N           new tokens, default 60
  nll                 mean next-token NLL, windows of --window tokens overlapping by one
    --text FILE         default the model's evaluation text (tinystories_eval.txt, shakespeare_val.txt)
    --chars N|all       leading characters of the text to score, default 2000
    --window N          default 512 (the model's trained context)

  --backend reference|kvcache   default reference
  --keys, --values FORMAT       kvcache storage: f32 f16 bf16 int8 int4 (default f32)
  --group-size N                kvcache quantization group along head_dim
  --rotate                      kvcache Hadamard rotation
  --rope                        kvcache stores keys before RoPE and applies it itself (theta 10000, interleaved)
  --block-size N                kvcache tokens per block, default 32
  --chunk N                     prefill chunk, default 64
  --model stories260K|shakes64|FILE   default stories260K; a name picks the
                                     tokenizer, text and prompt of ../shared/models
  --tokenizer FILE`;

async function main(): Promise<void> {
  const { values: o, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      prompt: { type: 'string' },
      steps: { type: 'string', default: '60' },
      text: { type: 'string' },
      chars: { type: 'string', default: '2000' },
      window: { type: 'string', default: '512' },
      backend: { type: 'string', default: 'reference' },
      keys: { type: 'string', default: 'f32' },
      values: { type: 'string', default: 'f32' },
      'group-size': { type: 'string' },
      rotate: { type: 'boolean', default: false },
      rope: { type: 'boolean', default: false },
      'block-size': { type: 'string', default: '32' },
      chunk: { type: 'string', default: '64' },
      model: { type: 'string', default: 'stories260K' },
      tokenizer: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const command = positionals[0] ?? 'generate';
  if (o.help || (command !== 'generate' && command !== 'nll')) {
    console.log(USAGE);
    process.exitCode = o.help ? 0 : 1;
    return;
  }
  const int = (name: string, v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`);
    return n;
  };

  // A named model brings its own files; a checkpoint file keeps stories260K's defaults.
  const named = sharedModel(o.model) ?? MODELS.stories260K;
  const checkpoint = loadCheckpoint(sharedModel(o.model)?.model ?? o.model);
  const tokenizer = Tokenizer.load(o.tokenizer ?? named.tokenizer, checkpoint.config.vocabSize);
  const promptText = o.prompt ?? named.prompt;
  const textFile = o.text ?? named.evalText;
  const dims = attentionDims(checkpoint.config);

  let backend: AttentionBackend;
  let dispose = (): void => {};
  if (o.backend === 'reference') {
    backend = new ReferenceAttention(dims);
  } else if (o.backend === 'kvcache') {
    // loaded only here, so the reference path works without the native library
    const { KVCacheAttention } = await import('./kvcache-attention');
    const settings: Record<string, unknown> = {
      keys: o.keys,
      values: o.values,
      blockSize: int('block-size', o['block-size']),
      rotate: o.rotate,
    };
    if (o['group-size'] !== undefined) settings.groupSize = int('group-size', o['group-size']);
    if (o.rope) settings.rope = { theta: 10000, style: 'interleaved' };
    const kv = new KVCacheAttention(dims, settings);
    backend = kv;
    dispose = () => kv.dispose();
  } else {
    throw new Error(`--backend must be reference or kvcache, got ${o.backend}`);
  }

  const model = new Transformer(checkpoint, backend);
  const chunkSize = int('chunk', o.chunk);
  try {
    if (command === 'generate') {
      const prompt = tokenizer.encode(promptText, { bos: true });
      const t0 = performance.now();
      process.stdout.write(tokenizer.decodeAll(prompt));
      const out = generateGreedy(model, prompt, int('steps', o.steps), {
        chunkSize,
        onToken: (token, prev) => process.stdout.write(tokenizer.decodePiece(prev, token)),
      });
      const ms = performance.now() - t0;
      process.stdout.write('\n');
      console.error(`${out.length} tokens in ${ms.toFixed(0)} ms (${((out.length * 1000) / ms).toFixed(1)} tok/s)`);
    } else {
      const all = readFileSync(textFile, 'utf8');
      const text = o.chars === 'all' ? all : all.slice(0, int('chars', o.chars));
      const ids = tokenizer.encode(text, { bos: true });
      const t0 = performance.now();
      const r = nll(model, ids, int('window', o.window), { chunkSize });
      const ms = performance.now() - t0;
      console.log(
        `nll ${r.nll.toFixed(4)} nats/token  ppl ${r.perplexity.toFixed(3)}  ` +
          `(${r.tokens} predicted tokens of ${ids.length}, ${r.windows} windows, ${ms.toFixed(0)} ms)`,
      );
    }
  } finally {
    dispose();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
