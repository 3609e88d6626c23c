// One side of the two-process test (two-process.test.ts), run as its own Node process:
//   put  <store> <out>: prefill a document on stories260K, compact it, put it in the store;
//   load <store> <out>: match and load the document from the store.
// Both then write the same outputs from their sequence (attention of fixed queries in every
// layer, and the logits after a continuation) to <out>, and print what they did as JSON.
// <store> is redis://... or a directory path.
import { writeFileSync, readFileSync } from 'node:fs';
import { KVCache, PrefixStore, type Sequence } from '../../lib/index';
import { EVAL_TEXT_PATH } from '../../examples/llama2c/paths';
import { cacheOptions, compact, encode, forward, loadStoryModel, prefill } from '../../examples/store/story-model';

const [role, where, out] = process.argv.slice(2) as [string, string, string];
const m = loadStoryModel();
const ids = encode(m, readFileSync(EVAL_TEXT_PATH, 'utf8').slice(0, 4000), 360);
const DOC = 300;
const doc = ids.slice(0, DOC);
const cache = new KVCache(cacheOptions(m, { keys: 'int8', values: 'int4', groupSize: 8, rotate: true }));
const store = where.startsWith('redis://')
  ? PrefixStore.redis({ url: where, keyPrefix: process.env['KVC_TEST_PREFIX'] ?? 'kvc-two-process:', chunkTokens: 64, model: 'stories260K', timeoutMs: 5000 })
  : PrefixStore.directory(where, { chunkTokens: 64, model: 'stories260K' });

/** Attention of seeded queries in every layer, then the logits of the continuation ids[DOC..]. */
function outputs(seq: Sequence): Buffer {
  const parts: Buffer[] = [];
  let s = 12345;
  const next = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  for (let l = 0; l < m.dims.layers; l++) {
    const q = Float32Array.from({ length: m.dims.queryHeads * m.dims.headDim }, next);
    parts.push(Buffer.from(seq.attention(l, q).buffer));
  }
  const fork = seq.fork();
  parts.push(Buffer.from(forward(m, fork, ids, DOC).buffer));
  fork.free();
  return Buffer.concat(parts);
}

async function main(): Promise<void> {
  let report: Record<string, unknown>;
  if (role === 'put') {
    const seq = prefill(m, cache, doc);
    await compact(seq, 0.25);
    const put = await store.put(doc, seq, { title: 'eval text, first 300 tokens' });
    report = { put, rows: seq.length(0, 0) };
    writeFileSync(out, outputs(seq));
  } else {
    const match = await store.match(ids, cache);
    const loaded = await store.load(ids, cache);
    if (!loaded) throw new Error(`load missed (match: ${JSON.stringify(match)})`);
    report = { match, length: loaded.length, kind: loaded.kind, meta: loaded.meta, rows: loaded.sequence.length(0, 0) };
    writeFileSync(out, outputs(loaded.sequence));
  }
  await store.close();
  cache.dispose();
  console.log(JSON.stringify(report));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
