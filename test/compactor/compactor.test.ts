// Compactor through the public API: options, exactness at t = T, quantized storage, busy
// sequences, dispose and GC while a compaction runs, forks, layers/heads, chunking, progress,
// reference-query sources (repeat-prefill, keys fallback) and online compaction.
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { Compactor, KVCache, KVCacheError, type KVCacheOptions, type Sequence } from '../../lib/index';
import { attend, headSlice, llmStreams, relativeError } from './llm-stream';

const D = 64;

function filledCache(T: number, options: Partial<KVCacheOptions> = {}, seed = 3) {
  const o = { layers: 2, kvHeads: 2, headDim: D, keys: 'f32', values: 'f32', threads: 1, ...options } as KVCacheOptions;
  const cache = new KVCache(o);
  const s = llmStreams({ tokens: T, kvHeads: o.kvHeads, headDim: D, queries: 256, heldOut: 64 }, seed);
  const seq = cache.createSequence();
  for (let l = 0; l < o.layers; l++) {
    seq.append(l, s.keys, s.values);
    for (let i = 0; i < 256; i++) seq.attention(l, s.queries.subarray(i * o.kvHeads * D, (i + 1) * o.kvHeads * D), { recordQueries: true });
  }
  return { cache, seq, s };
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: string) {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(KVCacheError);
    expect((e as KVCacheError).code).toBe(code);
    return e as KVCacheError;
  }
  throw new Error(`expected a KVCacheError ${code}`);
}

describe('Compactor options', () => {
  it('rejects bad options with INVALID_ARGUMENT', async () => {
    const bad: unknown[] = [
      null, 5, { ratio: 0 }, { ratio: 1.5 }, { ratio: '0.5' }, { ratio: 0.5, targetTokens: 10 },
      { ratio: 0.5, method: 'h2o' }, { ratio: 0.5, protect: { sink: 4 } }, { ratio: 0.5, protect: { sinks: -1 } },
      { ratio: 0.5, chunkSize: 1.5 }, { ratio: 0.5, ridge: -1 }, { ratio: 0.5, ridge: Infinity },
      { ratio: 0.5, nnlsIterations: -2 }, { ratio: 0.5, queries: 'reservoir' }, { ratio: 0.5, queries: [new Float64Array(4)] },
      { ratio: 0.5, layers: [] }, { ratio: 0.5, heads: [-1] }, { ratio: 0.5, threads: 0 }, { ratio: 0.5, onProgress: 1 },
      { ratio: 0.5, ratios: 0.5 }, { ratio: 0.5, online: { maxRows: 10 } }, { ratio: 1, online: { maxRows: 1000 } },
      { ratio: 0.5, online: { maxRows: 1000, recent: 8 } },
    ];
    for (const options of bad) {
      expect(() => new Compactor(options as never), JSON.stringify(options)).toThrowError(KVCacheError);
      try {
        new Compactor(options as never);
      } catch (e) {
        expect((e as KVCacheError).code).toBe('INVALID_ARGUMENT');
      }
    }
    const { cache, seq } = filledCache(128);
    await expectCode(new Compactor({}).compact(seq), 'INVALID_ARGUMENT'); // no budget
    await expectCode(new Compactor({ ratio: 0.5 }).compact(seq, { layers: [2] }), 'INVALID_ARGUMENT');
    await expectCode(new Compactor({ ratio: 0.5 }).compact(seq, { heads: [5] }), 'INVALID_ARGUMENT');
    await expectCode(new Compactor({ ratio: 0.5 }).compact(seq, { queries: [new Float32Array(2 * D)] }), 'INVALID_ARGUMENT'); // one entry, 2 layers
    await expectCode(new Compactor({ ratio: 0.5 }).compact(seq, { queries: [new Float32Array(3), null] }), 'SHAPE_MISMATCH');
    await expectCode(new Compactor({ ratio: 0.5 }).compact({} as Sequence), 'INVALID_ARGUMENT');
    await expectCode(() => new Compactor({ ratio: 0.5 }).maybeCompact(seq), 'INVALID_ARGUMENT');
    expect(seq.length(0, 0)).toBe(128); // nothing changed
    cache.dispose();
    await expectCode(new Compactor({ ratio: 0.5 }).compact(seq), 'DISPOSED');
  });
});

describe('Compactor correctness', () => {
  it('t = T reproduces attention to f32 rounding (f32 storage)', async () => {
    const { cache, seq, s } = filledCache(300);
    const q = s.heldOut.subarray(0, 2 * D);
    const before = [seq.attention(0, q), seq.attention(1, q)];
    const report = await new Compactor({ ratio: 1, protect: { sinks: 0, recent: 0 } }).compact(seq);
    expect(report.rowsAfter).toBe(report.rowsBefore);
    for (const st of report.streams) expect(st.outputError).toBeLessThan(1e-5);
    const after = [seq.attention(0, q), seq.attention(1, q)];
    for (let l = 0; l < 2; l++) {
      for (let i = 0; i < q.length; i++) expect(Math.abs(after[l]![i]! - before[l]![i]!)).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(before[l]![i]!)));
    }
    cache.dispose();
  });

  it('int8 storage: kept keys stay bit-exact, values and beta are fitted', async () => {
    const { cache, seq } = filledCache(512, { keys: 'int8', values: 'int8' });
    const original = [0, 1].map((h) => seq.read(1, h));
    const report = await new Compactor({ method: 'omp', ratio: 0.25, protect: { sinks: 4, recent: 16 } }).compact(seq, { layers: [1] });
    expect(report.streams.length).toBe(2);
    for (let h = 0; h < 2; h++) {
      const rows = seq.read(1, h);
      expect(rows.positions.length).toBe(128);
      let changedBeta = 0;
      for (let j = 0; j < rows.positions.length; j++) {
        const src = rows.positions[j]!; // positions = original row indices here
        expect(rows.keys.subarray(j * D, (j + 1) * D)).toEqual(original[h]!.keys.subarray(src * D, (src + 1) * D));
        if (rows.beta[j] !== 0) changedBeta++;
        if (j < 4 || j >= 128 - 16) {
          // protected rows: value and beta untouched (bit-exact)
          expect(rows.beta[j]).toBe(0);
          expect(rows.values.subarray(j * D, (j + 1) * D)).toEqual(original[h]!.values.subarray(src * D, (src + 1) * D));
        }
      }
      expect(changedBeta).toBeGreaterThan(0);
      expect(report.streams[h]!.outputError).toBeLessThan(0.2);
    }
    expect(seq.length(0, 0)).toBe(512); // layer 0 untouched
    expect(report.bytesFreed).toBeGreaterThan(0);
    cache.dispose();
  });

  it('compacting a fork leaves the parent unchanged', async () => {
    const { cache, seq } = filledCache(256);
    const before = seq.read(0, 1);
    const child = seq.fork();
    const report = await new Compactor({ ratio: 0.25 }).compact(child);
    expect(child.length(0, 1)).toBe(64);
    expect(report.bytesFreed).toBeLessThan(0); // copy-on-write: the parent keeps the old blocks
    const after = seq.read(0, 1);
    expect(after.keys).toEqual(before.keys);
    expect(after.values).toEqual(before.values);
    expect(after.beta).toEqual(before.beta);
    expect(seq.length(0, 1)).toBe(256);
    cache.dispose();
  });

  it('layers and heads limit the compacted streams; targetTokens sets the rows', async () => {
    const { cache, seq } = filledCache(200);
    const r = new Compactor({ targetTokens: 50 }).compactSync(seq, { layers: [1], heads: [0] });
    expect(r.streams.map((x) => [x.layer, x.kvHead])).toEqual([[1, 0]]);
    expect([seq.length(0, 0), seq.length(0, 1), seq.length(1, 0), seq.length(1, 1)]).toEqual([200, 200, 50, 200]);
    cache.dispose();
  });

  it('chunkSize compacts chunks independently with small error', async () => {
    const { cache, seq, s } = filledCache(1024, { layers: 1, kvHeads: 1 });
    const whole = seq.fork();
    const rc = await new Compactor({ ratio: 0.25, chunkSize: 256 }).compact(seq, { heldOutQueries: [s.heldOut] });
    const rw = await new Compactor({ ratio: 0.25 }).compact(whole, { heldOutQueries: [s.heldOut] });
    expect(seq.length(0, 0)).toBe(256);
    console.log(`chunked held-out ${rc.streams[0]!.heldOutOutputError} vs whole ${rw.streams[0]!.heldOutOutputError}`);
    expect(rc.streams[0]!.heldOutOutputError!).toBeLessThan(0.25);
    cache.dispose();
  });

  it('reports progress, phases and bytes', async () => {
    const { cache, seq } = filledCache(256, { layers: 3 });
    const fractions: number[] = [];
    const statsBefore = cache.stats();
    const r = await new Compactor({ ratio: 0.25, threads: 1 }).compact(seq, { onProgress: (f) => fractions.push(f) });
    expect(fractions.length).toBeGreaterThan(0);
    for (let i = 1; i < fractions.length; i++) expect(fractions[i]!).toBeGreaterThanOrEqual(fractions[i - 1]!);
    expect(fractions.at(-1)!).toBeLessThanOrEqual(1);
    expect(r.streams.length).toBe(6);
    expect(r.rowsBefore).toBe(6 * 256);
    expect(r.rowsAfter).toBe(6 * 64);
    expect(r.bytesFreed).toBe(statsBefore.bytesUsed - cache.stats().bytesUsed);
    expect(r.milliseconds.total).toBeGreaterThan(0);
    expect(r.milliseconds.scores).toBeGreaterThan(0);
    // An exception thrown by onProgress is ignored.
    await new Compactor({ ratio: 0.5 }).compact(seq, { onProgress: () => { throw new Error('ignored'); } });
    cache.dispose();
  });
});

describe('Compactor lifecycle', () => {
  it('the sequence is BUSY while compact() runs; other sequences are not', async () => {
    const { cache, seq, s } = filledCache(512);
    const other = cache.createSequence();
    const p = new Compactor({ ratio: 0.5 }).compact(seq);
    const q = s.heldOut.subarray(0, 2 * D);
    await expectCode(() => seq.append(0, s.keys.subarray(0, 2 * D), s.values.subarray(0, 2 * D)), 'BUSY');
    await expectCode(() => seq.attention(0, q), 'BUSY');
    await expectCode(() => seq.truncate(10), 'BUSY');
    await expectCode(() => seq.fork(), 'BUSY');
    await expectCode(() => seq.free(), 'BUSY');
    await expectCode(() => seq.export(), 'BUSY');
    await expectCode(new Compactor({ ratio: 0.5 }).compact(seq), 'BUSY');
    await expectCode(() => new Compactor({ ratio: 0.5 }).compactSync(seq), 'BUSY');
    other.append(0, s.keys.subarray(0, 2 * D), s.values.subarray(0, 2 * D));
    other.attention(0, q);
    await p;
    expect(seq.length(0, 0)).toBe(256);
    seq.attention(0, q); // usable again
    cache.dispose();
  });

  it('dispose() while compacting does not wait; the promise rejects with DISPOSED', async () => {
    const { cache, seq } = filledCache(1024, { layers: 4 });
    const p = new Compactor({ ratio: 0.25, threads: 1 }).compact(seq);
    cache.dispose();
    const e = await expectCode(p, 'DISPOSED');
    expect(e.message).toMatch(/disposed/);
  });

  it('dropping every reference mid-compaction and collecting garbage does not crash', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    let p: Promise<unknown>;
    {
      const { seq } = filledCache(1024, { layers: 2 });
      p = new Compactor({ ratio: 0.25 }).compact(seq);
    }
    gc();
    const r = (await p) as { rowsAfter: number };
    expect(r.rowsAfter).toBe(4 * 256);
    gc();
  });
});

describe('reference queries', () => {
  it('falls back to the keys when nothing was recorded, and says so', async () => {
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: 'f32', values: 'f32', threads: 1 });
    const s = llmStreams({ tokens: 256, kvHeads: 1, headDim: D, queries: 1, heldOut: 1 }, 5);
    const seq = cache.createSequence();
    seq.append(0, s.keys, s.values);
    const r = await new Compactor({ ratio: 0.5 }).compact(seq);
    expect(r.streams[0]!.querySource).toBe('keys');
    expect(r.streams[0]!.queries).toBe(256);
    expect(seq.length(0, 0)).toBe(128);
    cache.dispose();
  });

  it('repeat-prefill: record queries on a repeat of the context, truncate, compact', async () => {
    const N = 1024;
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: 'f32', values: 'f32', threads: 1, queryReservoir: 1024 });
    const s = llmStreams({ tokens: N, kvHeads: 1, headDim: D, queries: 1024, heldOut: 256 }, 11);
    const seq = cache.createSequence();
    seq.append(0, s.keys, s.values); // the context, positions 0..N-1
    const keysOnly = seq.fork();
    // "Repeat the text": the same tokens again at positions N..2N-1, prefilled in chunks of 256
    // with recordQueries; each chunk's queries attend causally to the context and the repeat so far.
    for (let c = 0; c < N; c += 256) {
      seq.append(0, s.keys.subarray(c * D, (c + 256) * D), s.values.subarray(c * D, (c + 256) * D));
      seq.attention(0, s.queries.subarray(c * D, (c + 256) * D), { recordQueries: true });
    }
    seq.truncate(N); // drop the repeat; the recorded queries stay
    expect(seq.length(0, 0)).toBe(N);
    const reference = attend(s.heldOut, s.keys, s.values, null, D);
    const heldOutError = (x: Sequence) => {
      const rows = x.read(0, 0);
      return relativeError(attend(s.heldOut, rows.keys, rows.values, rows.beta, D), reference);
    };
    const r = await new Compactor({ ratio: 0.25 }).compact(seq);
    expect(r.streams[0]!.querySource).toBe('recorded');
    expect(r.streams[0]!.queries).toBe(1024);
    const rk = await new Compactor({ ratio: 0.25 }).compact(keysOnly);
    expect(rk.streams[0]!.querySource).toBe('keys');
    const errRepeat = heldOutError(seq);
    const errKeys = heldOutError(keysOnly);
    console.log(`repeat-prefill held-out ${errRepeat.toFixed(4)}, keys as queries ${errKeys.toFixed(4)}`);
    expect(errRepeat).toBeLessThan(0.15);
    expect(errRepeat).toBeLessThan(errKeys);
    cache.dispose();
  });
});

describe('online compaction', () => {
  it('generation continues through several compactions with bounded lengths', () => {
    const H = 2;
    const cache = new KVCache({ layers: 2, kvHeads: H, headDim: D, keys: 'int8', values: 'f16', threads: 1 });
    const s = llmStreams({ tokens: 1200, kvHeads: H, headDim: D, queries: 1200, heldOut: 1 }, 13);
    const seq = cache.createSequence();
    const compactor = new Compactor({ method: 'highest-attention', ratio: 0.5, protect: { sinks: 4, recent: 32 }, online: { maxRows: 256 } });
    let compactions = 0;
    let longest = 0;
    for (let t = 0; t < 1200; t++) {
      for (let l = 0; l < 2; l++) {
        seq.append(l, s.keys.subarray(t * H * D, (t + 1) * H * D), s.values.subarray(t * H * D, (t + 1) * H * D));
        const out = seq.attention(l, s.queries.subarray(t * H * D, (t + 1) * H * D), { recordQueries: true });
        expect(Number.isFinite(out[0]!)).toBe(true);
      }
      const r = compactor.maybeCompact(seq);
      if (r) {
        compactions++;
        expect(r.rowsAfter).toBeLessThan(r.rowsBefore);
      }
      for (let l = 0; l < 2; l++) for (const n of seq.lengths(l)) longest = Math.max(longest, n);
      expect(longest).toBeLessThanOrEqual(256);
    }
    expect(compactions).toBeGreaterThanOrEqual(3);
    expect(seq.nextPosition(0)).toBe(1200); // positions continue
    const rows = seq.read(0, 0);
    expect(rows.positions[rows.positions.length - 1]).toBe(1199);
    cache.dispose();
  });
});
