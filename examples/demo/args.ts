// The demo's command line, in one table: adding an option is one entry in DEMO_OPTIONS (its
// value is then in DemoArgs.parsed) and its use in examples/demo.ts. Parsed by node:util
// parseArgs (examples/shared/cli.ts): unknown options are rejected with the closest known one
// suggested.
import type { Storage } from '../../lib/index';
import { numberIn, parseCli, positiveInt, UsageError, usage, type CliOptions, type CliSpec, type CliValues } from '../shared/cli';
import { MODELS } from '../llama2c/paths';

const STORAGE = ['f32', 'f16', 'bf16', 'int8', 'int4'] as const;

export const DEMO_OPTIONS = {
  tokens: { type: 'string', value: 'N', description: 'context tokens of the synthetic layer (default 4096)' },
  steps: { type: 'string', value: 'N', description: 'decode steps timed per format (default 64); with --model: new tokens' },
  chunk: { type: 'string', value: 'N', description: 'prefill chunk (default 512)' },
  threads: { type: 'string', value: 'N', description: 'CPU threads for attention (default: all)' },
  keep: { type: 'string', value: 'F', description: 'fraction of rows eviction and compaction keep (default 0.1; with --model 0.25)' },
  model: {
    type: 'string',
    value: 'NAME|FILE',
    description: `a real checkpoint instead: ${Object.keys(MODELS).join(', ')} (../shared/models), or a llama2.c file with --tokenizer`,
  },
  tokenizer: { type: 'string', value: 'FILE', description: 'tokenizer of --model FILE' },
  text: { type: 'string', value: 'TEXT', description: "the context for --model (default: the start of the model's evaluation text)" },
  context: { type: 'string', value: 'N', description: 'context tokens for --model (default 200; shakes64 256)' },
  keys: { type: 'string', choices: STORAGE, description: "the quantized cache's keys (default int8)" },
  values: { type: 'string', choices: STORAGE, description: "the quantized cache's values (default int4)" },
  'group-size': { type: 'string', value: 'N', description: 'quantization group (default min(32, head_dim))' },
  rotate: { type: 'boolean', description: 'Hadamard rotation of the quantized keys (default; --no-rotate)' },
  // Handled before this table is parsed (examples/demo.ts): listed for the usage text.
  store: { type: 'boolean', description: 'the prefix store instead: a second request reuses a compacted document (--store --help)' },
} satisfies CliOptions;

export const DEMO_SPEC: CliSpec<typeof DEMO_OPTIONS> = {
  command: 'npm run demo --',
  summary:
    'What kvcompact is for, end to end. Default (no files needed): one Llama-3-8B-shaped layer of synthetic\n' +
    'keys and values: memory per token and decode speed per storage format, then eviction and compaction\n' +
    'shrinking the cache to the same budget, with their attention errors and the memory freed.\n' +
    'With --model: a real model generating text over an f32, a quantized and a compacted cache.',
  options: DEMO_OPTIONS,
};

export interface DemoArgs {
  /** every option as parsed (strings and booleans), for options read where they are used */
  parsed: CliValues<typeof DEMO_OPTIONS>;
  help: boolean;
  tokens: number;
  steps?: number;
  chunk: number;
  threads?: number;
  keep?: number;
  model?: string;
  tokenizer?: string;
  text?: string;
  context?: number;
  keys: Storage;
  values: Storage;
  groupSize?: number;
  rotate: boolean;
}

export function parseDemoArgs(argv: readonly string[]): DemoArgs {
  // A bare `--model` (as earlier versions took it) means the default checkpoint.
  const args = [...argv];
  const mi = args.indexOf('--model');
  if (mi >= 0 && (mi === args.length - 1 || args[mi + 1]!.startsWith('-'))) args.splice(mi + 1, 0, 'stories260K');
  const o = parseCli(DEMO_SPEC, args);
  const optional = (name: string, v: string | undefined): number | undefined => (v === undefined ? undefined : positiveInt(name, v, 0));
  const a: DemoArgs = {
    parsed: o,
    help: o.help === true,
    tokens: positiveInt('tokens', o.tokens, 4096),
    chunk: positiveInt('chunk', o.chunk, 512),
    keys: (o.keys ?? 'int8') as Storage,
    values: (o.values ?? 'int4') as Storage,
    rotate: o.rotate !== false,
  };
  const steps = optional('steps', o.steps);
  if (steps !== undefined) a.steps = steps;
  const threads = optional('threads', o.threads);
  if (threads !== undefined) a.threads = threads;
  const context = optional('context', o.context);
  if (context !== undefined) a.context = context;
  const groupSize = optional('group-size', o['group-size']);
  if (groupSize !== undefined) a.groupSize = groupSize;
  if (o.keep !== undefined) a.keep = numberIn('keep', o.keep, 0, 0.01, 0.99);
  if (o.model !== undefined) a.model = o.model;
  if (o.tokenizer !== undefined) a.tokenizer = o.tokenizer;
  if (o.text !== undefined) a.text = o.text;
  const modelOnly = ['tokenizer', 'text', 'context', 'keys', 'values', 'group-size', 'rotate'] as const;
  if (a.model === undefined) {
    const given = modelOnly.filter((k) => o[k] !== undefined);
    if (given.length > 0) throw new UsageError(`--${given[0]} is an option of --model; see ${DEMO_SPEC.command} --help`);
  }
  return a;
}

export const DEMO_USAGE = usage(DEMO_SPEC);
