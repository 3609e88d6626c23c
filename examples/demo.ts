// `npm run demo`: what kvcompact is for, end to end (examples/demo/):
//   1. formats.ts  memory per token and decode speed of each storage format, one
//                  Llama-3-8B-shaped layer of synthetic LLM-like keys and values;
//   2. shrink.ts   eviction and compaction shrinking that cache to the same budget: attention
//                  error on held-out queries and the memory freed;
//   --store        store/demo-store.ts: a second request reuses a compacted document.
//   --model        model.ts: a real checkpoint (stories260K, shakes64) generating text over an
//                  f32, a quantized and a compacted cache side by side.
// Options: examples/demo/args.ts (`npm run demo -- --help`). Progress goes to stderr, redrawn
// in place on a terminal and printed now and then otherwise.
import { KVCache } from '../lib/index';
import { DEMO_USAGE, parseDemoArgs } from './demo/args';
import { runFormats } from './demo/formats';
import { runModel } from './demo/model';
import { runShrink } from './demo/shrink';
import { runMain } from './shared/cli';
import { formatSeconds, Progress } from './shared/progress';

runMain(async () => {
  // The prefix-store demo has a command line of its own (examples/store/demo-store.ts).
  if (process.argv.includes('--store')) {
    const { runStoreDemo } = await import('./store/demo-store');
    return runStoreDemo(process.argv.slice(2).filter((a) => a !== '--store'));
  }
  const a = parseDemoArgs(process.argv.slice(2));
  if (a.help) {
    process.stdout.write(DEMO_USAGE);
    return;
  }
  const t0 = performance.now();
  const progress = new Progress();
  const devices = KVCache.devices();
  const threads = a.threads ?? devices.cpu.threads;
  const where = `CPU ${devices.cpu.simd}, ${threads} thread${threads === 1 ? '' : 's'}`;
  if (a.model !== undefined) {
    const text = await runModel(
      {
        model: a.model, keys: a.keys, values: a.values, rotate: a.rotate, keep: a.keep ?? 0.25,
        ...(a.tokenizer !== undefined ? { tokenizer: a.tokenizer } : {}),
        ...(a.text !== undefined ? { text: a.text } : {}),
        ...(a.context !== undefined ? { context: a.context } : {}),
        ...(a.steps !== undefined ? { steps: a.steps } : {}),
        ...(a.groupSize !== undefined ? { groupSize: a.groupSize } : {}),
      },
      progress,
    );
    progress.done();
    console.log(`${text}\n\n(done in ${formatSeconds(performance.now() - t0)}, ${where})`);
    return;
  }
  console.log(`kvcompact demo: one Llama-3-8B-shaped layer (8 kv heads × head_dim 128, 32 query heads), ${where}\n`);
  const formats = runFormats({ tokens: a.tokens, steps: a.steps ?? 64, chunk: a.chunk, threads: a.threads }, progress);
  progress.done();
  console.log(`${formats.text}\n`);
  const shrink = await runShrink({ tokens: a.tokens, keep: a.keep ?? 0.1, threads: a.threads }, progress);
  progress.done();
  console.log(`${shrink}\n`);
  console.log(`(done in ${formatSeconds(performance.now() - t0)}; \`npm run demo -- --model stories260K\` for a real model, --help for options)`);
});
