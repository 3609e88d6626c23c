// Child process of gc.test.ts, run with --expose-gc: drops sequences and caches without
// free()/dispose() and reports, as one JSON line, what the garbage collector reclaimed and
// the peak resident memory of a loop that never disposes.
import { KVCache } from '../../lib/index';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const tick = () => new Promise((r) => setImmediate(r));

/** Collects until the finalizers (which N-API runs after the collection) have run. */
async function collect(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc!();
    await tick();
  }
}

const rows = (tokens: number, width: number) => Float32Array.from({ length: tokens * width }, (_, i) => Math.sin(i));

async function sequences() {
  const cache = new KVCache({ layers: 2, kvHeads: 2, headDim: 64, threads: 1 });
  const k = rows(100, 2 * 64);
  const make = (n: number) => {
    for (let i = 0; i < n; i++) {
      const seq = cache.createSequence();
      for (let l = 0; l < 2; l++) seq.append(l, k, k);
    }
  };
  const kept = cache.createSequence();
  kept.append(0, k, k);
  make(200);
  const before = cache.stats();
  await collect();
  const after = cache.stats();
  kept.free();
  cache.dispose();
  return { before, after };
}

/** Caches never disposed, each committing pool memory; the loop yields so finalizers can run. */
async function caches(count: number) {
  let peakRss = 0;
  let peakExternal = 0;
  const k = rows(256, 2 * 128);
  for (let i = 0; i < count; i++) {
    const cache = new KVCache({ layers: 8, kvHeads: 2, headDim: 128, keys: 'f32', values: 'f32', threads: 1 });
    const seq = cache.createSequence();
    for (let l = 0; l < 8; l++) seq.append(l, k, k);
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakExternal = Math.max(peakExternal, m.external);
    await tick();
  }
  const perCache = new KVCache({ layers: 8, kvHeads: 2, headDim: 128, keys: 'f32', values: 'f32', threads: 1 });
  const s = perCache.createSequence();
  for (let l = 0; l < 8; l++) s.append(l, k, k);
  const committedPerCache = perCache.stats().committedBytes;
  perCache.dispose();
  return { count, committedPerCache, peakRss, peakExternal };
}

async function main() {
  const mode = process.argv[2];
  const result = mode === 'sequences' ? await sequences() : await caches(Number(process.argv[3] ?? 300));
  process.stdout.write(JSON.stringify(result) + '\n');
}
void main();
