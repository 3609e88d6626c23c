// Lifecycle of the public objects: compact(seq, { signal }) and its ABORTED rejection that
// leaves the sequence byte-identical, dispose() that never blocks the event loop while a
// compaction runs, `using` / `await using` on KVCache, Sequence and Compactor, and objects
// posted to another thread.
import { MessageChannel, Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Compactor, KVCache, KVCacheError, type KVCacheOptions, type Sequence } from '../../lib/index';
import { llmStreams } from '../compactor/llm-stream';

const D = 64;

/** A sequence of `layers` × 2 streams of T rows each; compaction uses the keys as queries. */
function filled(T: number, layers: number, options: Partial<KVCacheOptions> = {}) {
  const cache = new KVCache({ layers, kvHeads: 2, headDim: D, keys: 'f16', values: 'int8', threads: 1, ...options });
  const s = llmStreams({ tokens: T, kvHeads: 2, headDim: D, queries: 1, heldOut: 1 }, 17);
  const seq = cache.createSequence();
  for (let l = 0; l < layers; l++) seq.append(l, s.keys, s.values);
  return { cache, seq };
}

async function rejection(p: Promise<unknown>): Promise<KVCacheError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(KVCacheError);
    return e as KVCacheError;
  }
  throw new Error('expected the promise to reject');
}

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

describe('compact(seq, { signal })', () => {
  it('an already aborted signal rejects at once with ABORTED and the reason as cause; nothing changes', async () => {
    const { cache, seq } = filled(256, 1);
    const before = seq.export();
    const controller = new AbortController();
    const reason = new Error('user went away');
    controller.abort(reason);
    const e = await rejection(new Compactor({ ratio: 0.25, queries: 'keys' }).compact(seq, { signal: controller.signal }));
    expect(e.code).toBe('ABORTED');
    expect(e.cause).toBe(reason);
    expect(same(seq.export(), before)).toBe(true);
    expect(() => new Compactor({ ratio: 0.25 }).compactSync(seq, { signal: controller.signal })).toThrow(/aborted/);
    expect((await rejection(new Compactor({ ratio: 0.25 }).compact(seq, { signal: 'stop' as never }))).code).toBe('INVALID_ARGUMENT');
    cache.dispose();
  });

  it('aborting mid-compaction stops at the next batch: ABORTED, the sequence byte-identical and usable', async () => {
    const { cache, seq } = filled(1024, 6);
    const before = seq.export();
    // The cache's state; workspaceBytes is scratch memory the aborted run may have warmed.
    const { workspaceBytes: _w0, ...statsBefore } = cache.stats();
    const controller = new AbortController();
    let abortedAt = 0;
    const progress: number[] = [];
    const t0 = performance.now();
    const p = new Compactor({ ratio: 0.25, queries: 'keys', threads: 1 }).compact(seq, {
      signal: controller.signal,
      onProgress: (f) => {
        progress.push(f);
        if (progress.length === 1) {
          abortedAt = performance.now();
          controller.abort();
        }
      },
    });
    const e = await rejection(p);
    const settledAt = performance.now();
    expect(e.code).toBe('ABORTED');
    expect(e.cause).toBeInstanceOf(DOMException); // the default reason of abort()
    expect(progress[0]).toBeLessThan(1); // it really stopped early
    console.log(`abort: first batch after ${(abortedAt - t0).toFixed(1)} ms, rejected ${(settledAt - abortedAt).toFixed(1)} ms after abort()`);
    expect(same(seq.export(), before)).toBe(true);
    const { workspaceBytes: _w1, ...statsAfter } = cache.stats();
    expect(statsAfter).toEqual(statsBefore);
    // Not busy any more: it can change and be compacted to the end.
    seq.truncate(1000);
    const r = await new Compactor({ ratio: 0.25, queries: 'keys' }).compact(seq);
    expect(r.rowsAfter).toBeLessThan(r.rowsBefore);
    cache.dispose();
  });

  it('an abort after the last batch but before the results are applied still leaves the sequence unchanged', async () => {
    const { cache, seq } = filled(256, 2);
    const before = seq.export();
    const controller = new AbortController();
    const p = new Compactor({ ratio: 0.25, queries: 'keys' }).compact(seq, {
      signal: controller.signal,
      // Progress 1 is delivered after the last batch and before the main thread applies.
      onProgress: (f) => {
        if (f === 1) controller.abort();
      },
    });
    expect((await rejection(p)).code).toBe('ABORTED');
    expect(same(seq.export(), before)).toBe(true);
    cache.dispose();
  });

  it('aborting after the compaction settled changes nothing', async () => {
    const { cache, seq } = filled(256, 1);
    const controller = new AbortController();
    const r = await new Compactor({ ratio: 0.5, queries: 'keys' }).compact(seq, { signal: controller.signal });
    const after = seq.export();
    controller.abort();
    expect(r.rowsAfter).toBe(256);
    expect(same(seq.export(), after)).toBe(true);
    cache.dispose();
  });
});

describe('dispose while work is pending', () => {
  it('dispose() returns within a few ms while a long compaction runs; the promise rejects with DISPOSED', async () => {
    const { cache, seq } = filled(4096, 4);
    let firstBatch = 0;
    const t0 = performance.now();
    let resolveFirst!: () => void;
    const started = new Promise<void>((r) => (resolveFirst = r));
    const p = new Compactor({ ratio: 0.25, queries: 'keys', threads: 1 }).compact(seq, {
      onProgress: () => {
        if (!firstBatch) {
          firstBatch = performance.now() - t0;
          resolveFirst();
        }
      },
    });
    await started;
    await new Promise((r) => setTimeout(r, 100)); // the second batch is now computing
    const d0 = performance.now();
    cache.dispose();
    const disposeMs = performance.now() - d0;
    const e = await rejection(p);
    const settleMs = performance.now() - d0;
    console.log(`dispose during compaction: dispose() ${disposeMs.toFixed(2)} ms; one batch ${firstBatch.toFixed(0)} ms; rejected ${settleMs.toFixed(0)} ms after dispose()`);
    expect(e.code).toBe('DISPOSED');
    expect(disposeMs).toBeLessThan(10);
    // The measurement means something only if a batch takes much longer than dispose(): the
    // old dispose() waited for the rest of the batch (settleMs here).
    expect(firstBatch).toBeGreaterThan(5 * disposeMs);
    expect(settleMs).toBeGreaterThan(5 * disposeMs);
    expect(() => cache.stats()).toThrow(/disposed/);
  });

  it('await using: [Symbol.asyncDispose] on the cache waits until a cancelled compaction let go', async () => {
    let p: Promise<unknown> | undefined;
    let settled = false;
    {
      await using cache = filled(1024, 4).cache;
      const seq = cache.createSequence();
      const s = llmStreams({ tokens: 512, kvHeads: 2, headDim: D, queries: 1, heldOut: 1 }, 3);
      for (let l = 0; l < 4; l++) seq.append(l, s.keys, s.values);
      p = new Compactor({ ratio: 0.25, queries: 'keys', threads: 1 }).compact(seq);
      p.then(
        () => (settled = true),
        () => (settled = true),
      );
    }
    expect(settled).toBe(true);
    expect((await rejection(p!)).code).toBe('DISPOSED');
  });
});

describe('using', () => {
  it('KVCache and Sequence dispose and free at the end of the scope', () => {
    let outer: KVCache;
    let kept: Sequence;
    {
      using cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, threads: 1 });
      outer = cache;
      kept = cache.createSequence();
      {
        using seq = cache.createSequence();
        seq.append(0, new Float32Array(8), new Float32Array(8));
        expect(cache.stats().sequences).toBe(2);
      }
      expect(cache.stats().sequences).toBe(1);
      expect(kept.freed).toBe(false);
    }
    expect(outer.disposed).toBe(true);
    expect(kept.freed).toBe(true);
  });

  it('disposing a busy sequence aborts its compaction and frees it once the compaction settled', async () => {
    const { cache, seq } = filled(1024, 4);
    const p = new Compactor({ ratio: 0.25, queries: 'keys', threads: 1 }).compact(seq);
    expect(() => seq.free()).toThrow(expect.objectContaining({ code: 'BUSY' }));
    seq[Symbol.dispose]();
    expect((await rejection(p)).code).toBe('ABORTED');
    await new Promise((r) => setImmediate(r));
    expect(seq.freed).toBe(true);
    expect(cache.stats().sequences).toBe(0);
    // The asynchronous form waits for it.
    const { seq: other } = { seq: filled(512, 2).seq };
    const q = new Compactor({ ratio: 0.25, queries: 'keys', threads: 1 }).compact(other);
    await other[Symbol.asyncDispose]();
    expect(other.freed).toBe(true);
    expect((await rejection(q)).code).toBe('ABORTED');
    cache.dispose();
    other.cache.dispose();
  });

  it('a Compactor disposed with compactions in flight aborts them; asyncDispose waits for them', async () => {
    const a = filled(1024, 4);
    const b = filled(1024, 4);
    const beforeA = a.seq.export();
    const beforeB = b.seq.export();
    let pa: Promise<unknown>;
    let pb: Promise<unknown>;
    {
      await using compactor = new Compactor({ ratio: 0.25, queries: 'keys', threads: 1 });
      pa = compactor.compact(a.seq);
      pb = compactor.compact(b.seq);
    }
    expect((await rejection(pa)).code).toBe('ABORTED');
    expect((await rejection(pb)).code).toBe('ABORTED');
    expect(same(a.seq.export(), beforeA)).toBe(true);
    expect(same(b.seq.export(), beforeB)).toBe(true);
    a.cache.dispose();
    b.cache.dispose();
  });
});

describe('threads', () => {
  it('posting a KVCache or Sequence to another thread throws UNSUPPORTED instead of sending a dead copy', () => {
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, threads: 1 });
    const seq = cache.createSequence();
    const { port1, port2 } = new MessageChannel();
    for (const [what, value] of [['Sequence', seq], ['KVCache', cache]] as const) {
      let error: unknown;
      try {
        port1.postMessage(value);
      } catch (e) {
        error = e;
      }
      expect(error, what).toBeInstanceOf(KVCacheError);
      expect((error as KVCacheError).code).toBe('UNSUPPORTED');
      expect((error as KVCacheError).message).toContain(what);
      expect(() => structuredClone(value)).toThrow(/another thread/);
    }
    port1.close();
    port2.close();
    cache.dispose();
  });

  it('export() bytes are transferable: postMessage moves them (the sender\'s copy is detached)', async () => {
    // An external (adopted) ArrayBuffer is untransferable in Node: postMessage would copy it
    // (Node 20) or throw DataCloneError (Node >= 21). The README tells to transfer exports.
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, keys: 'f32', values: 'f32', threads: 1 });
    const seq = cache.createSequence();
    const rows = Float32Array.from({ length: 24 }, (_, i) => i / 7);
    seq.append(0, rows, rows);
    const bytes = seq.export();
    const expected = Buffer.from(bytes);
    const { port1, port2 } = new MessageChannel();
    const received = new Promise<Uint8Array>((resolve) => port2.once('message', resolve));
    port1.postMessage(bytes, [bytes.buffer as ArrayBuffer]);
    expect(bytes.byteLength, 'detached after the transfer').toBe(0);
    expect(Buffer.from(await received).equals(expected)).toBe(true);
    port1.close();
    port2.close();
    cache.dispose();
  });

  it('a worker thread uses its own cache; exported bytes cross threads and import here', async () => {
    // The binary lib/native/binding.ts loads: KVCOMPACT_NATIVE, else node-gyp-build's choice.
    const root = join(__dirname, '..', '..');
    const addonPath = process.env['KVCOMPACT_NATIVE'] ?? (createRequire(__filename)('node-gyp-build') as { path(dir: string): string }).path(root);
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require(workerData.addonPath);
      const cache = new addon.NativeCache({ layers: 1, kvHeads: 1, headDim: 8, keys: 'f32', values: 'f32', threads: 1 });
      const seq = cache.createSequence();
      const rows = Float32Array.from({ length: 24 }, (_, i) => i / 7);
      seq.append(0, rows, rows, null);
      const bytes = seq.export();
      cache.dispose();
      parentPort.postMessage(bytes, [bytes.buffer]);
      `,
      { eval: true, workerData: { addonPath } },
    );
    const bytes = await new Promise<Uint8Array>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    // Let the worker end on its own: terminating it while it runs native calls is the
    // separate shutdown case (test/hardening/worker-terminate.test.ts).
    expect(await new Promise((resolve) => worker.once('exit', resolve))).toBe(0);
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, keys: 'f32', values: 'f32', threads: 1 });
    const seq = cache.importSequence(bytes);
    expect(Array.from(seq.read(0, 0).keys)).toEqual(Array.from(Float32Array.from({ length: 24 }, (_, i) => i / 7)));
    cache.dispose();
  });
});
