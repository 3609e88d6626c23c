// Worker of terminate-child.ts: fills a cache, says 'ready', then runs forever either
// compact() in a loop (mode 'compact') or a loop of synchronous calls (mode 'sync'), until
// the parent terminates it, or (mode 'exit') calls process.exit() from a timer mid-compaction.
import { parentPort, workerData } from 'node:worker_threads';
import { Compactor, KVCache } from '../../lib/index';

const { mode, exitAfterMs } = workerData as { mode: 'compact' | 'sync' | 'exit'; exitAfterMs: number };
const layers = 2, kvHeads = 4, headDim = 64, tokens = 1024;
const cache = new KVCache({ layers, kvHeads, headDim, keys: 'int8', values: 'f16', threads: 2 });
const seq = cache.createSequence();
const n = tokens * kvHeads * headDim;
const keys = new Float32Array(n), values = new Float32Array(n);
let s = 12345;
for (let i = 0; i < n; i++) {
  s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  keys[i] = (s / 2 ** 32 - 0.5) * 4;
  values[i] = ((s >>> 7) / 2 ** 25 - 0.5) * 2;
}
for (let l = 0; l < layers; l++) seq.append(l, keys, values);
const compactor = new Compactor({ ratio: 0.25, queries: 'keys', threads: 2 });

async function compactForever(): Promise<never> {
  for (;;) {
    const f = seq.fork();
    await compactor.compact(f);
    f.free();
  }
}

function syncForever(): never {
  const q = new Float32Array(kvHeads * headDim).fill(0.1);
  const row = new Float32Array(kvHeads * headDim).fill(0.2);
  for (;;) {
    const f = seq.fork();
    f.append(0, row, row);
    f.attention(0, q);
    f.export();
    f.read(0, 0);
    cache.stats();
    f.free();
  }
}

parentPort!.postMessage('ready');
if (mode === 'exit') setTimeout(() => process.exit(0), exitAfterMs);
if (mode === 'sync') syncForever();
else void compactForever();
