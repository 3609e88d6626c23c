// Child process of limits.test.ts, started under a resource limit by the parent. Each case
// prints one JSON line { case, code } (the KVCacheError code, or 'ok'); a crash shows as
// the exit status and a hang as the parent's timeout.
//   threads: new KVCache({ threads: 256 }), compact() and compactSync() with 256 threads,
//            under a limit on processes per user (prlimit --nproc)
//   memory:  synchronous calls and compact() whose host allocations exceed an address-space
//            limit (prlimit --as); sizes follow the headroom the limit leaves
import * as fs from 'node:fs';
import { Compactor, KVCache, KVCacheError } from '../../lib/index';

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return e instanceof KVCacheError ? e.code : `not a KVCacheError: ${String(e)}`;
  }
}

async function codeOfAsync(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (e) {
    return e instanceof KVCacheError ? e.code : `not a KVCacheError: ${String(e)}`;
  }
}

function print(name: string, code: string): void {
  process.stdout.write(JSON.stringify({ case: name, code }) + '\n');
}

function filledSequence(cache: KVCache, tokens: number, chunk = 256): ReturnType<KVCache['createSequence']> {
  const { kvHeads, headDim, layers } = cache.config;
  const seq = cache.createSequence();
  const n = chunk * kvHeads * headDim;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i * 0.37) + 0.01 * (i % 13);
  for (let l = 0; l < layers; l++) for (let t = 0; t < tokens; t += chunk) seq.append(l, x, x);
  return seq;
}

function vmBytes(): { size: number; limit: number } {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const size = Number(/VmSize:\s+(\d+) kB/.exec(status)![1]) * 1024;
  const limits = fs.readFileSync('/proc/self/limits', 'utf8');
  const m = /Max address space\s+(\S+)/.exec(limits)!;
  return { size, limit: m[1] === 'unlimited' ? Infinity : Number(m[1]) };
}

async function threads(): Promise<void> {
  print('new KVCache threads 256', codeOf(() => new KVCache({ layers: 1, kvHeads: 2, headDim: 32, threads: 256 })));
  const cache = new KVCache({ layers: 1, kvHeads: 2, headDim: 32, threads: 1 });
  const seq = filledSequence(cache, 512);
  const compactor = new Compactor({ ratio: 0.5, queries: 'keys', threads: 256 });
  print('compact threads 256', await codeOfAsync(() => compactor.compact(seq)));
  print('compactSync threads 256', codeOf(() => compactor.compactSync(seq)));
  // Nothing changed and nothing is left busy: the sequence still takes appends.
  print('append after', codeOf(() => seq.append(0, new Float32Array(64), new Float32Array(64))));
  print('rows after', String(seq.length(0, 0)));
}

async function memory(): Promise<void> {
  const layers = 2, kvHeads = 4, headDim = 128, tokens = 8192; // 8 streams, 66 MB of f32 rows
  const cache = new KVCache({ layers, kvHeads, headDim, keys: 'f32', values: 'f32', maxBytes: 256 << 20, threads: 1 });
  const seq = filledSequence(cache, tokens);
  const compactor = new Compactor({ ratio: 0.5, queries: 'keys', threads: 1 });
  // Warm up first on a small sequence: libuv starts its threads and malloc its arenas now
  // (libuv aborts when it cannot start its pool, which is not ours to fix).
  const small = new KVCache({ layers: 1, kvHeads: 1, headDim: 32, threads: 1, maxBytes: 4 << 20 });
  print('warm-up compact', await codeOfAsync(() => compactor.compact(filledSequence(small, 256))));
  // Then take all but ~32 MB of the address space the limit allows (V8 itself aborts when an
  // ArrayBuffer cannot be allocated, and glibc when a thread's thread-local data cannot be, so
  // the ballast stops short of the limit: with ~16 MB left, 1 of 160 runs on a loaded machine
  // and one CI run aborted in glibc); the export (66 MB) and the compaction (8 streams of 8192
  // rows, 8192 reference queries each) need more.
  const ballast: Buffer[] = [];
  for (const step of [64 << 20, 8 << 20, 1 << 20]) {
    for (;;) {
      const { size, limit } = vmBytes();
      if (limit - size < (32 << 20) + step) break;
      ballast.push(Buffer.allocUnsafeSlow(step));
    }
  }
  print('export', codeOf(() => seq.export()));
  print('compact', await codeOfAsync(() => compactor.compact(seq)));
  print('compactSync', codeOf(() => compactor.compactSync(seq)));
  print('append after', codeOf(() => seq.append(0, new Float32Array(kvHeads * headDim), new Float32Array(kvHeads * headDim))));
  // Release the ballast (V8 frees array buffers after a full collection, on its own time).
  ballast.length = 0;
  for (let i = 0; i < 20 && vmBytes().limit - vmBytes().size < (256 << 20); i++) {
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  print('export after release', codeOf(() => seq.export()));
  print('rows after', String(seq.length(0, 0)));
}

void (async () => {
  const mode = process.argv[2];
  if (mode === 'threads') await threads();
  else if (mode === 'memory') await memory();
  process.stdout.write('done\n');
})();
