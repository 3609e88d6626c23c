// `npm run demo -- --store`: two requests share a long document through a PrefixStore.
// Request 1 misses, prefills the document on stories260K, compacts it (Attention Matching,
// 25% of the rows) and puts it in the store; request 2 asks another question about the same
// document, finds it, loads the compacted cache and only prefills its question. Prints the
// store's answers, the time to first token of both and what each generated.
import { parseArgs } from 'node:util';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KVCache, PrefixStore } from '../../lib/index';
import { EVAL_TEXT_PATH } from '../llama2c/paths';
import { cacheOptions, compact, continueGreedy, decode, encode, loadStoryModel, prefill } from './story-model';

export const STORE_USAGE = `usage: npm run demo -- --store [--backend memory|directory|redis] [--url redis://127.0.0.1:6379]
                                  [--dir PATH] [--ratio 0.25] [--steps 40]`;

function openStore(backend: string, url: string | undefined, dir: string | undefined): PrefixStore {
  const options = { model: 'stories260K', chunkTokens: 64 };
  if (backend === 'memory') return PrefixStore.memory(options);
  if (backend === 'directory') return PrefixStore.directory(dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kvc-demo-store-')), options);
  if (backend === 'redis') return PrefixStore.redis({ ...options, url: url ?? 'redis://127.0.0.1:6379', keyPrefix: `kvc-demo:${process.pid}:`, ttlSeconds: 600 });
  throw new Error(`--backend must be memory, directory or redis, got ${backend}`);
}

export async function runStoreDemo(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      backend: { type: 'string' }, url: { type: 'string' }, dir: { type: 'string' },
      ratio: { type: 'string' }, steps: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
  });
  if (o.help) return void console.log(STORE_USAGE);
  const ratio = Number(o.ratio ?? 0.25);
  const steps = Number(o.steps ?? 40);
  const m = loadStoryModel();
  const document = encode(m, fs.readFileSync(EVAL_TEXT_PATH, 'utf8').slice(0, 8000), 440);
  const questions = [' Once upon a time, there was', ' One day, a little'].map((q) => m.tokenizer.encode(q));
  const store = openStore(o.backend ?? 'memory', o.url, o.dir);
  const cache = new KVCache(cacheOptions(m, { keys: 'int8', values: 'int4', groupSize: 8, rotate: true }));
  console.log(`PrefixStore demo: ${store.backend} store, stories260K, a ${document.length}-token document, int8 keys / int4 values\n`);

  for (const [i, question] of questions.entries()) {
    const prompt = [...document, ...question];
    const t0 = performance.now();
    const match = await store.match(prompt, cache);
    console.log(`request ${i + 1}: match -> ${match.length ? `${match.length} tokens (${match.kind})` : 'miss'} in ${(performance.now() - t0).toFixed(2)} ms`);
    let seq;
    let from: number;
    const start = performance.now();
    const loaded = await store.load(prompt, cache);
    if (loaded) {
      seq = loaded.sequence;
      from = loaded.length;
      console.log(`  loaded ${from} tokens (${loaded.kind}, ${(loaded.bytes / 1024).toFixed(0)} KiB) in ${(performance.now() - start).toFixed(1)} ms`);
    } else {
      const t1 = performance.now();
      seq = prefill(m, cache, document);
      const prefillMs = performance.now() - t1;
      const rowsBefore = seq.length(0, 0);
      const t2 = performance.now();
      await compact(seq, ratio);
      const compactMs = performance.now() - t2;
      const put = await store.put(document, seq, { title: 'tinystories eval text' });
      console.log(`  prefilled ${document.length} tokens in ${prefillMs.toFixed(1)} ms, compacted ${rowsBefore} -> ${seq.length(0, 0)} rows per stream in ${compactMs.toFixed(1)} ms, put ${put ? `${(put.bytesWritten / 1024).toFixed(0)} KiB` : 'failed'}`);
      from = document.length;
    }
    const tc = performance.now();
    const { tokens, firstTokenMs } = continueGreedy(m, seq, prompt, from, steps);
    console.log(`  time to first token: ${(tc - t0 + firstTokenMs).toFixed(1)} ms (${firstTokenMs.toFixed(1)} ms of it prefilling the question${loaded ? '' : '; compaction and put included'})`);
    console.log(`  ${JSON.stringify(decode(m, question[question.length - 1]!, tokens))}\n`);
    seq.free();
  }
  const s = await store.stats();
  console.log(`store: ${s.hits} hits, ${s.misses} misses, ${(s.bytesWritten / 1024).toFixed(0)} KiB written, ${(s.bytesRead / 1024).toFixed(0)} KiB read, ${s.errors + s.timeouts} failures`);
  await store.close();
  cache.dispose();
}
