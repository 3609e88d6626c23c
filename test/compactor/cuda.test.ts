// Compaction on device 'cuda' against the same compaction on device 'cpu', on the real GPU when
// there is one and on the CPU through the SIMT emulator otherwise (test/support/cuda-target.ts
// decides and logs which).
//
// Expected agreement on the emulator: the fit itself (scores, selection, NNLS, value least
// squares) runs in the core on the host for both devices; a device only decodes rows for it
// (readRows, bit-exact across devices: test/cuda/parity.test.ts), moves the kept rows
// (gatherRows, bit-exact) and re-encodes the fitted values and beta (rewriteRows, the same
// encoder formulas as append). So the kept rows, their keys, values, beta and positions, the
// reports' errors and the exported bytes must be identical, not merely close. Attention after
// compaction is compared within 2e-6 relative, as in test/cuda/parity.test.ts: the CUDA
// attention kernel sums in another order than the CPU's.
//
// On a GPU, rows decoded for the fit may differ by an ulp (fma contraction), which the fit
// (a ridge-regularized solve) can amplify: the kept rows must be the same ones (a swap needs
// two selection scores within ~1e-6 relative; with these random inputs the gap at the cut is
// ~1e-2), kept keys within one step (they are not rewritten), fitted values within 1e-3
// relative (1e-2 for int8/int4, where such a difference can move a value one step), beta
// within 1e-3, the reported errors within 1e-3 + 1%, attention after compaction within
// 2e-3 relative. These bounds come from that reasoning, not yet from a run on hardware.
import { describe, expect, it } from 'vitest';

import { Compactor, KVCache, KVCacheError, type CompactOptions, type KVCacheOptions, type Sequence, type Storage } from '../../lib/index';
import { relError } from '../reference/compare';
import { randn, testRng, type Rng } from '../reference/random';
import { cudaTarget, expectRowsMatch } from '../support/cuda-target';

const target = cudaTarget();
const onDevice = target.rules === 'gpu';
const ATTENTION_REL = onDevice ? 2e-3 : 2e-6;

const D = 64;
const KV_HEADS = 2;
const QUERY_HEADS = 8; // GQA: 4 query heads per kv head
const LAYERS = 2;

// Random rows (never zeros): Gaussian keys with an outlier channel ×8, as real keys have,
// Gaussian values, and Gaussian queries recorded one token at a time (decode; the emulated
// attention kernel is slow with many query tokens per call). Each query token gives 4
// vectors per kv head (GQA); the fits run only with at least t of them for t kept rows (2t
// for OMP), otherwise the kept rows stay as they are and nothing is rewritten.
function fill(rng: Rng, seqs: Sequence[], rows: number, queryTokens: number) {
  for (let l = 0; l < LAYERS; l++) {
    const keys = randn(rng, rows * KV_HEADS * D);
    for (let i = 3; i < keys.length; i += D) keys[i]! *= 8;
    const values = randn(rng, rows * KV_HEADS * D);
    for (const s of seqs) s.append(l, keys, values);
    for (let i = 0; i < queryTokens; i++) {
      const q = randn(rng, QUERY_HEADS * D);
      for (const s of seqs) s.attention(l, q, { recordQueries: true });
    }
  }
}

// Rows whose bias or value differs from the row they were kept from: the ones rewriteRows wrote.
function rewrittenRows(seq: Sequence, before: Array<ReturnType<Sequence['read']>>): number {
  let n = 0;
  for (let l = 0; l < LAYERS; l++) {
    for (let h = 0; h < KV_HEADS; h++) {
      const old = before[l * KV_HEADS + h]!;
      const now = seq.read(l, h);
      now.positions.forEach((p, j) => {
        const i = old.positions.indexOf(p);
        const value = now.values.subarray(j * D, (j + 1) * D);
        if (now.beta[j] !== old.beta[i] || value.some((x, d) => x !== old.values[i * D + d])) n++;
      });
    }
  }
  return n;
}

function readAll(seq: Sequence) {
  const rows = [];
  for (let l = 0; l < LAYERS; l++) for (let h = 0; h < KV_HEADS; h++) rows.push(seq.read(l, h));
  return rows;
}

function bytes(a: Float32Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function expectSameRows(gpu: Sequence, cpu: Sequence, label: string) {
  const c = cpu.cache.config;
  for (let l = 0; l < LAYERS; l++) {
    for (let h = 0; h < KV_HEADS; h++) {
      const a = cpu.read(l, h);
      const b = gpu.read(l, h);
      const where = `${label}: layer ${l} head ${h}`;
      expect(Array.from(b.positions), `${where} positions`).toEqual(Array.from(a.positions));
      if (!onDevice) {
        expect(bytes(b.keys).equals(bytes(a.keys)), `${where} keys`).toBe(true);
        expect(bytes(b.values).equals(bytes(a.values)), `${where} values`).toBe(true);
        expect(bytes(b.beta).equals(bytes(a.beta)), `${where} beta`).toBe(true);
        continue;
      }
      expectRowsMatch(target, b.keys, a.keys, c.keys, c.rotateKeys ? D : c.groupSize, `${where} keys`);
      const quantized = c.values === 'int8' || c.values === 'int4';
      expect(relError(b.values, a.values), `${where} values`).toBeLessThan(quantized ? 1e-2 : 1e-3);
      for (let j = 0; j < a.beta.length; j++) expect(Math.abs(b.beta[j]! - a.beta[j]!), `${where} beta ${j}`).toBeLessThan(1e-3);
    }
  }
}

// Reported errors: identical on the emulator, within 1e-3 + 1% on a GPU.
function sameError(gpu: number, cpu: number): boolean {
  return onDevice ? Math.abs(gpu - cpu) <= 1e-3 + 0.01 * Math.abs(cpu) : Object.is(gpu, cpu);
}

function expectSameExport(gpu: Sequence, cpu: Sequence) {
  if (onDevice) expect(gpu.export().length).toBe(cpu.export().length);
  else expect(Buffer.from(gpu.export()).equals(Buffer.from(cpu.export()))).toBe(true);
}

describe(`Compactor on device cuda (${target.kind}) matches device cpu`, () => {
  const cases: Array<{ keys: Storage; values: Storage; rotate: KVCacheOptions['rotate']; options: CompactOptions }> = [
    { keys: 'f32', values: 'f32', rotate: false, options: { ratio: 0.25 } },
    { keys: 'f16', values: 'f16', rotate: { values: true }, options: { ratio: 0.3, method: 'omp' } },
    { keys: 'int8', values: 'int8', rotate: { keys: true, values: true }, options: { ratio: 0.25, protect: { sinks: 2, recent: 8 } } },
    { keys: 'int8', values: 'int4', rotate: false, options: { targetTokens: 60, chunkSize: 128 } },
    { keys: 'f16', values: 'int4', rotate: { values: true }, options: { ratio: 0.2, method: 'omp' } },
  ];
  for (const c of cases) {
    const name = `keys ${c.keys}, values ${c.values}, rotate ${JSON.stringify(c.rotate)}, ${JSON.stringify(c.options)}`;
    it(name, async () => {
      const rng = testRng();
      const options: KVCacheOptions = {
        layers: LAYERS, kvHeads: KV_HEADS, headDim: D, queryHeads: QUERY_HEADS, blockSize: 16,
        keys: c.keys, values: c.values, groupSize: 32, rotate: c.rotate, threads: 2,
      };
      const cpu = new KVCache({ ...options, device: 'cpu' });
      const gpu = new KVCache({ ...options, device: 'cuda' });
      const a = cpu.createSequence();
      const b = gpu.createSequence();
      const rows = 256;
      fill(rng, [a, b], rows, 40);
      expectSameRows(b, a, 'before');
      const before = readAll(b);

      const compactor = new Compactor({ ...c.options, threads: 2 });
      const ra = await compactor.compact(a);
      const rb = await compactor.compact(b);
      expect(rb.rowsBefore).toBe(LAYERS * KV_HEADS * rows);
      expect(rb.rowsAfter).toBe(ra.rowsAfter);
      expect(rb.rowsAfter).toBeLessThan(rb.rowsBefore);
      expect(rb.blocksFreed).toBe(ra.blocksFreed);
      expect(rb.streams.map((s) => [s.rowsAfter, s.querySource, s.queries]))
        .toEqual(ra.streams.map((s) => [s.rowsAfter, s.querySource, s.queries]));
      rb.streams.forEach((s, i) => {
        expect(sameError(s.outputError, ra.streams[i]!.outputError), `stream ${i} outputError`).toBe(true);
        expect(sameError(s.massError, ra.streams[i]!.massError), `stream ${i} massError`).toBe(true);
      });
      for (const s of rb.streams) expect(s.querySource).toBe('recorded');
      expectSameRows(b, a, 'after');
      // Most kept rows outside the protected sinks and recent rows (kept as they are) were
      // refitted, i.e. rewritten and not only gathered.
      const kept = c.options.protect ?? { sinks: 4, recent: 32 };
      const fitted = rb.rowsAfter - LAYERS * KV_HEADS * (kept.sinks! + kept.recent!);
      expect(rewrittenRows(b, before)).toBeGreaterThan(fitted / 2);
      expectSameExport(b, a);

      for (let l = 0; l < LAYERS; l++) {
        const q = randn(rng, 2 * QUERY_HEADS * D);
        const lseA = new Float32Array(2 * QUERY_HEADS);
        const lseB = new Float32Array(2 * QUERY_HEADS);
        // Two query tokens, at the positions of two new rows appended for them as a decoder would.
        const k = randn(rng, 2 * KV_HEADS * D);
        const v = randn(rng, 2 * KV_HEADS * D);
        a.append(l, k, v);
        b.append(l, k, v);
        const outA = a.attention(l, q, { lse: lseA });
        const outB = b.attention(l, q, { lse: lseB });
        expect(relError(outB, outA)).toBeLessThan(ATTENTION_REL);
        expect(relError(lseB, lseA)).toBeLessThan(onDevice ? 2e-4 : 2e-6);
      }
      cpu.dispose();
      gpu.dispose();
    });
  }

  it('compact() with progress, a fork, compactSync and maybeCompact', async () => {
    const rng = testRng();
    const options: KVCacheOptions = {
      layers: LAYERS, kvHeads: KV_HEADS, headDim: D, queryHeads: QUERY_HEADS, blockSize: 16,
      keys: 'int8', values: 'int4', groupSize: 32, rotate: { values: true }, threads: 2,
    };
    const cpu = new KVCache({ ...options, device: 'cpu' });
    const gpu = new KVCache({ ...options, device: 'cuda' });
    const a = cpu.createSequence();
    const b = gpu.createSequence();
    fill(rng, [a, b], 200, 40);

    // A fork shares the parent's blocks; compacting it copies what it rewrites, so the
    // parent stays as it was.
    const fa = a.fork();
    const fb = b.fork();
    const before = b.read(1, 1);
    const fractions: number[] = [];
    const pending = new Compactor({ ratio: 0.3, threads: 1 }).compact(fb, { onProgress: (f) => fractions.push(f) });
    expect(() => fb.append(0, randn(rng, KV_HEADS * D), randn(rng, KV_HEADS * D))).toThrowError(KVCacheError);
    const report = await pending;
    await new Compactor({ ratio: 0.3, threads: 1 }).compact(fa);
    expect(fractions.length).toBeGreaterThan(0);
    for (let i = 1; i < fractions.length; i++) expect(fractions[i]!).toBeGreaterThan(fractions[i - 1]!);
    expect(fractions.at(-1)).toBe(1);
    expect(report.streams).toHaveLength(LAYERS * KV_HEADS);
    expect(report.rowsAfter).toBe(LAYERS * KV_HEADS * 60);
    expectSameRows(fb, fa, 'fork');
    expect(rewrittenRows(fb, readAll(b))).toBeGreaterThan((report.rowsAfter - LAYERS * KV_HEADS * 36) / 2);
    const parent = b.read(1, 1);
    expect(bytes(parent.values).equals(bytes(before.values))).toBe(true); // same device: bit-exact
    expect(bytes(parent.beta).equals(bytes(before.beta))).toBe(true);
    expectSameRows(b, a, 'parent');

    // Synchronous compaction of the parent (targetTokens), then online compaction of new rows.
    const sa = new Compactor({ targetTokens: 80, threads: 1 }).compactSync(a);
    const sb = new Compactor({ targetTokens: 80, threads: 1 }).compactSync(b);
    expect(sb.rowsAfter).toBe(sa.rowsAfter);
    expectSameRows(b, a, 'compactSync');
    const online = new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 8 }, online: { maxRows: 100 }, threads: 1 });
    fill(rng, [a, b], 40, 4);
    const oa = online.maybeCompact(a);
    const ob = online.maybeCompact(b);
    expect(ob?.rowsAfter).toBe(oa?.rowsAfter);
    expect(ob?.rowsAfter).toBeLessThan(ob?.rowsBefore ?? 0);
    expectSameRows(b, a, 'maybeCompact');
    fb.append(0, randn(rng, KV_HEADS * D), randn(rng, KV_HEADS * D)); // not left busy
    cpu.dispose();
    gpu.dispose();
  });
});
