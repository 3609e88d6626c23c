// The native surface called directly (bypassing lib/'s checks), as a careless or hostile
// caller could: every malformed argument is a KVCacheError with a stable code, never a crash
// or a bare Error, and no rejected call changes the cache. Also the argument kinds that must
// work (typed arrays on a SharedArrayBuffer) and the look-alikes that must not (a Proxy of a
// typed array, forged wrapped objects, structured clones, sparse position arrays).
import { describe, expect, it } from 'vitest';
import { EvictionPolicy, KVCache, KVCacheError, type Sequence } from '../../lib/index';
import { native, type NativeCompactionSpec, type NativePolicySpec, type NativeBudgetSpec } from '../../lib/native/binding';
import { randn, testRng } from '../reference/random';
import { expectKVError, expectSameCache, randomRows, snapshotCache } from '../foundation/helpers';

/* eslint-disable @typescript-eslint/no-explicit-any */
const bad = (x: unknown) => x as any;

const L = 2;
const H = 2;
const D = 8;
const QH = 4;
const ROW = H * D;
const QROW = QH * D;
const baseOptions = { layers: L, kvHeads: H, headDim: D, queryHeads: QH, keys: 'f32', values: 'f32', rotateKeys: false, rotateValues: false, threads: 1 };

function fixture(label: string) {
  const rng = testRng(label);
  const cache = new KVCache({ layers: L, kvHeads: H, headDim: D, queryHeads: QH, keys: 'f16', values: 'int8', blockSize: 8, threads: 1 });
  const a = cache.createSequence();
  const b = cache.createSequence();
  for (const [seq, T] of [[a, 20], [b, 5]] as [Sequence, number][]) {
    for (let l = 0; l < L; l++) {
      const r = randomRows(rng, { kvHeads: H, headDim: D }, T);
      seq.append(l, r.keys, r.values);
      seq.attention(l, randn(rng, 2 * QROW), { accumulateScores: true, recordQueries: true });
    }
  }
  const seqs = [a, b];
  const before = snapshotCache(cache, seqs);
  const unchanged = (what: string) => expectSameCache(cache, seqs, before, `after ${what}`);
  return { rng, cache, a, b, unchanged };
}

const policy = (over: Partial<Record<keyof NativePolicySpec, unknown>> = {}): NativePolicySpec =>
  ({ source: 'recency', sinks: 0, recent: 4, window: 0, pool: 1, seed: 0, given: null, ...over }) as NativePolicySpec;
const budget = (over: Partial<Record<keyof NativeBudgetSpec, unknown>> = {}): NativeBudgetSpec =>
  ({ kind: 'keep', keep: 8, ratio: 1, layerRatios: null, perHead: 'uniform', safeguard: 0.2, schedule: 'uniform', slope: 0.5, ...over }) as NativeBudgetSpec;
const compaction = (over: Partial<Record<keyof NativeCompactionSpec, unknown>> = {}): NativeCompactionSpec =>
  ({
    method: 'highest-attention', ratio: 0.5, targetTokens: 0, sinks: 1, recent: 1, chunkSize: 0, ridge: 1e-4, nnlsIterations: 5,
    threads: 1, layers: null, heads: null, querySource: 'keys', queries: null, heldOut: null, online: false, maxRows: 0, ...over,
  }) as NativeCompactionSpec;

describe('native surface, malformed arguments', () => {
  it('NativeCache options: wrong types, out-of-schema values, numbers for enum names -> INVALID_ARGUMENT', () => {
    const addon = native();
    const cases: [string, unknown][] = [
      ['undefined', undefined], ['null', null], ['a number', 5], ['an array', []], ['a function', () => 0],
      ['no layers', { ...baseOptions, layers: undefined }], ['no headDim', { ...baseOptions, headDim: undefined }],
      ['layers 0', { ...baseOptions, layers: 0 }], ['layers 4097', { ...baseOptions, layers: 4097 }],
      ['layers as a string', { ...baseOptions, layers: '2' }], ['layers 1.5', { ...baseOptions, layers: 1.5 }],
      ['layers NaN', { ...baseOptions, layers: NaN }], ['layers -1', { ...baseOptions, layers: -1 }],
      ['headDim 7', { ...baseOptions, headDim: 7 }], ['headDim 1026', { ...baseOptions, headDim: 1026 }],
      // The two drifts the TypeScript layer always rejected and the native layer used to accept:
      ['queryHeads 1e6', { ...baseOptions, queryHeads: 1e6 }],
      ['groupSize 3 with f16', { ...baseOptions, keys: 'f16', values: 'f16', groupSize: 3 }],
      ['groupSize 0', { ...baseOptions, groupSize: 0 }], ['groupSize 16 > headDim', { ...baseOptions, groupSize: 16 }],
      ['queryHeads not a multiple', { ...baseOptions, queryHeads: 3 }],
      ['keys as an enum number', { ...baseOptions, keys: 3 }], ['keys unknown', { ...baseOptions, keys: 'int2' }],
      ['values as an enum number', { ...baseOptions, values: 0 }], ['device unknown', { ...baseOptions, device: 'tpu' }],
      ['device as a number', { ...baseOptions, device: 1 }], ['rotateKeys a string', { ...baseOptions, rotateKeys: 'yes' }],
      ['rotate a non-power-of-two headDim', { ...baseOptions, headDim: 6, groupSize: 6, rotateKeys: true }],
      ['maxBytes -1', { ...baseOptions, maxBytes: -1 }], ['maxBytes 2^60', { ...baseOptions, maxBytes: 2 ** 60 }],
      ['maxBytes below one block', { ...baseOptions, maxBytes: 16 }], ['threads 257', { ...baseOptions, threads: 257 }],
      ['queryReservoir 2^20 + 1', { ...baseOptions, queryReservoir: 2 ** 20 + 1 }], ['rotationSeed 2^32', { ...baseOptions, rotationSeed: 2 ** 32 }],
    ];
    for (const [what, options] of cases) expectKVError(() => new addon.NativeCache(bad(options)), 'INVALID_ARGUMENT', what);
    // The defaults the schema gives are the ones TypeScript fills in.
    const direct = new addon.NativeCache(bad({ layers: 1, kvHeads: 1, headDim: 8 }));
    const viaTs = new KVCache({ layers: 1, kvHeads: 1, headDim: 8 });
    expect(direct.stats().blockBytes).toBe(viaTs.native.stats().blockBytes);
    direct.dispose();
    viaTs.dispose();
  });

  it('NativeSequence methods: wrong types, unknown flag bits, forged objects -> typed errors, cache unchanged', () => {
    const { rng, cache, a, b, unchanged } = fixture('sequence');
    const s = a.native;
    const k = randn(rng, ROW);
    const v = randn(rng, ROW);
    const q = randn(rng, QROW);
    const out = new Float32Array(QROW);
    const cases: [string, () => unknown, string][] = [
      ['append no args', () => bad(s).append(), 'INVALID_ARGUMENT'],
      ['append layer string', () => s.append(bad('0'), k, v, null), 'INVALID_ARGUMENT'],
      ['append layer out of range', () => s.append(7, k, v, null), 'INVALID_ARGUMENT'],
      ['append Float64Array', () => s.append(0, bad(new Float64Array(ROW)), bad(new Float64Array(ROW)), null), 'INVALID_ARGUMENT'],
      ['append plain objects', () => s.append(0, bad({ length: ROW }), bad({ length: ROW }), null), 'INVALID_ARGUMENT'],
      ['append Float32 positions', () => s.append(0, k, v, bad(new Float32Array(1))), 'INVALID_ARGUMENT'],
      ['append positions too long', () => s.append(0, k, v, new Int32Array(2)), 'SHAPE_MISMATCH'],
      ['append half a token', () => s.append(0, k.subarray(1), v.subarray(1), null), 'SHAPE_MISMATCH'],
      ['attention flags 32 (unknown bit)', () => s.attention(0, q, 1, out, null, 32), 'INVALID_ARGUMENT'],
      ['attention flags 24 (precision both fast and exact)', () => s.attention(0, q, 1, out, null, 24), 'INVALID_ARGUMENT'],
      ['attention flags 0x80000003', () => s.attention(0, q, 1, out, null, 0x80000003), 'INVALID_ARGUMENT'],
      ['attention flags 1.5', () => s.attention(0, q, 1, out, null, 1.5), 'INVALID_ARGUMENT'],
      ['attention flags "1"', () => s.attention(0, q, 1, out, null, bad('1')), 'INVALID_ARGUMENT'],
      ['attention tq 0', () => s.attention(0, q, 0, out, null, 0), 'SHAPE_MISMATCH'],
      ['attention tq 2^31', () => s.attention(0, q, 2 ** 31, out, null, 0), 'SHAPE_MISMATCH'],
      ['attention out Int32Array', () => s.attention(0, q, 1, bad(new Int32Array(QROW)), null, 0), 'INVALID_ARGUMENT'],
      ['length kvHead 99', () => s.length(0, 99), 'INVALID_ARGUMENT'],
      ['lengths layer -1', () => s.lengths(-1), 'INVALID_ARGUMENT'],
      ['truncate 2^32', () => s.truncate(2 ** 32), 'INVALID_ARGUMENT'],
      ['read layer 99', () => s.read(99, 0), 'INVALID_ARGUMENT'],
      ['new NativeSequence()', () => new (bad(s).constructor)(), 'INVALID_ARGUMENT'],
      ['new NativeSequence({})', () => new (bad(s).constructor)({}), 'INVALID_ARGUMENT'],
      ['importSequence(string)', () => cache.native.importSequence(bad('x')), 'INVALID_ARGUMENT'],
      ['importSequence(Int8Array)', () => cache.native.importSequence(bad(new Int8Array(64))), 'INVALID_ARGUMENT'],
      ['importSequence(garbage)', () => cache.native.importSequence(new Uint8Array(64)), 'CORRUPT_DATA'],
    ];
    for (const [what, fn, code] of cases) {
      expectKVError(fn, code, what);
      unchanged(what);
    }
    // A method called on a foreign receiver throws (node-addon-api's unwrap check), never crashes.
    expect(() => bad(s).append.call({}, 0, k, v, null)).toThrow();
    expect(() => bad(cache.native).stats.call(Object.create(bad(cache.native).constructor.prototype))).toThrow();
    unchanged('foreign receivers');
    expect(b.length(0, 0)).toBe(5);
    cache.dispose();
  });

  it('attentionBatch: forged sequences, another cache, duplicates, unknown flags -> INVALID_ARGUMENT', () => {
    const { rng, cache, a, b, unchanged } = fixture('batch');
    const other = new KVCache({ layers: L, kvHeads: H, headDim: D, queryHeads: QH, threads: 1 });
    const foreign = other.createSequence();
    const q2 = randn(rng, 2 * QROW);
    const out2 = new Float32Array(2 * QROW);
    const NativeSequence = bad(a.native).constructor;
    const cases: [string, unknown[], number][] = [
      ['a plain object', [{}, b.native], 0],
      ['Object.create(NativeSequence.prototype)', [Object.create(NativeSequence.prototype), b.native], 0],
      ['the NativeCache itself', [cache.native, b.native], 0],
      ['a public Sequence instead of its native', [a, b.native], 0],
      ['a sequence of another cache', [foreign.native, b.native], 0],
      ['the same sequence twice', [a.native, a.native], 0],
      ['unknown flag bits', [a.native, b.native], 32],
      ['precision both fast and exact', [a.native, b.native], 24],
    ];
    for (const [what, seqs, flags] of cases) {
      expectKVError(() => cache.native.attentionBatch(0, bad(seqs), q2, out2, null, flags), 'INVALID_ARGUMENT', what);
      unchanged(what);
    }
    // The public API says the same about duplicates (a sequence's mass would count twice).
    expectKVError(() => cache.attentionBatch(0, [a, a], q2, { accumulateScores: true }), 'INVALID_ARGUMENT', 'public duplicate');
    unchanged('public duplicate');
    cache.native.attentionBatch(0, [a.native, b.native], q2, out2, null, 0);
    other.dispose();
    cache.dispose();
  });

  it('eviction and compaction specs: numbers for names, missing fields, unknown names, forged sequences -> INVALID_ARGUMENT', async () => {
    const { cache, a, unchanged } = fixture('specs');
    const addon = native();
    const forged = Object.create(bad(a.native).constructor.prototype);
    const evictCases: [string, () => unknown][] = [
      ['policy spec null', () => addon.evict(a.native, bad(null), budget())],
      ['policy source as a number', () => addon.evict(a.native, policy({ source: 1 }), budget())],
      ['policy source unknown', () => addon.evict(a.native, policy({ source: 'h2o' }), budget())],
      ['policy without sinks', () => addon.evict(a.native, policy({ sinks: undefined }), budget())],
      ['policy pool 0', () => addon.evict(a.native, policy({ pool: 0 }), budget())],
      ['policy given Float64Array', () => addon.evict(a.native, policy({ source: 'given', given: new Float64Array(4) }), budget())],
      ['budget kind as a number', () => addon.evict(a.native, policy(), budget({ kind: 0 }))],
      ['budget kind unknown', () => addon.evict(a.native, policy(), budget({ kind: 'all' }))],
      ['budget perHead as a boolean', () => addon.evict(a.native, policy(), budget({ perHead: true }))],
      ['budget schedule unknown', () => addon.evict(a.native, policy(), budget({ schedule: 'linear' }))],
      ['budget ratio 2', () => addon.evict(a.native, policy(), budget({ kind: 'ratio', ratio: 2 }))],
      ['budget layers without layerRatios', () => addon.evict(a.native, policy(), budget({ kind: 'layers' }))],
      ['budget layerRatios Float32Array', () => addon.evict(a.native, policy(), budget({ kind: 'layers', layerRatios: new Float32Array(L) }))],
      ['evict a forged sequence', () => addon.evict(forged, policy(), budget())],
      ['evict a plain object', () => addon.evict(bad({}), policy(), budget())],
      ['policyScores of a forged sequence', () => addon.policyScores(forged, policy(), 0, 0)],
      ['streamScores of a forged sequence', () => addon.streamScores(forged, 0, 0)],
      ['recordedQueries of the cache', () => addon.recordedQueries(bad(cache.native), 0, 0)],
      ['streamPositions kvHead 9', () => addon.streamPositions(a.native, 0, 9)],
      ['blockLayout storage unknown', () => addon.blockLayout('f16', 'int2', 8, 8, 8)],
      ['blockLayout groupSize 0', () => addon.blockLayout('int8', 'int8', 8, 0, 8)],
      ['blockLayout headDim string', () => addon.blockLayout('f16', 'f16', bad('8'), 8, 8)],
    ];
    for (const [what, fn] of evictCases) {
      expectKVError(fn, 'INVALID_ARGUMENT', what);
      unchanged(what);
    }
    const compactCases: [string, NativeCompactionSpec | null][] = [
      ['spec null', null],
      ['method as a number', compaction({ method: 1 })],
      ['method unknown', compaction({ method: 'h2o' })],
      ['querySource as a number', compaction({ querySource: 2 })],
      ['ratio and targetTokens both 0', compaction({ ratio: 0 })],
      ['ratio 1.5', compaction({ ratio: 1.5 })],
      ['nnlsIterations 10^6', compaction({ nnlsIterations: 1e6 })],
      ['threads 0', compaction({ threads: 0 })],
      ['online a number', compaction({ online: 1 })],
      ['online without maxRows', compaction({ online: true })],
      ['layers Float32Array', compaction({ layers: new Float32Array([0]) })],
      ['layers negative', compaction({ layers: new Int32Array([-1]) })],
      ['queries a sparse array of length 2^32 - 1', compaction({ querySource: 'given', queries: (() => { const x: unknown[] = []; x.length = 2 ** 32 - 1; return x; })() })],
      ['queries holding a number', compaction({ querySource: 'given', queries: [1, null] })],
    ];
    for (const [what, spec] of compactCases) {
      expectKVError(() => addon.compactSync(a.native, bad(spec)), 'INVALID_ARGUMENT', `compactSync ${what}`);
      expectKVError(() => addon.compact(a.native, bad(spec), null), 'INVALID_ARGUMENT', `compact ${what}`);
      unchanged(what);
    }
    expectKVError(() => addon.compact(forged, compaction(), null), 'INVALID_ARGUMENT', 'compact a forged sequence');
    expectKVError(() => addon.compact(a.native, compaction(), bad(5)), 'INVALID_ARGUMENT', 'onProgress a number');
    unchanged('compact');
    // A well-formed spec still works afterwards.
    const job = addon.compact(a.native, compaction(), null);
    expect((await job.promise).streams.length).toBe(L * H);
    cache.dispose();
  });
});

describe('argument kinds', () => {
  it('typed arrays on a SharedArrayBuffer work everywhere and give the same results', () => {
    const rng = testRng('shared');
    const make = () => new KVCache({ layers: 1, kvHeads: H, headDim: D, queryHeads: QH, keys: 'int8', values: 'f16', threads: 1 });
    const shared = <T extends Float32Array | Int32Array | Uint8Array>(a: T): T => {
      const s = new (a.constructor as new (b: SharedArrayBuffer) => T)(new SharedArrayBuffer(a.byteLength));
      s.set(a as never);
      return s;
    };
    const { keys, values } = randomRows(rng, { kvHeads: H, headDim: D }, 12);
    const q = randn(rng, 3 * QROW);
    const positions = Int32Array.from({ length: 12 }, (_, i) => 10 + 2 * i);
    const plain = make();
    const viaShared = make();
    const p = plain.createSequence();
    const s = viaShared.createSequence();
    p.append(0, keys, values, { positions });
    s.append(0, shared(keys), shared(values), { positions: shared(positions) });
    const outPlain = p.attention(0, q, { recordQueries: true });
    const outShared = shared(new Float32Array(q.length));
    const lseShared = shared(new Float32Array(3 * QH));
    s.attention(0, shared(q), { out: outShared, lse: lseShared, recordQueries: true });
    expect(Array.from(outShared)).toEqual(Array.from(outPlain));
    const bytes = s.export();
    expect(Array.from(bytes)).toEqual(Array.from(p.export()));
    const again = viaShared.importSequence(shared(bytes));
    expect(Array.from(again.read(0, 1).keys)).toEqual(Array.from(p.read(0, 1).keys));
    plain.dispose();
    viaShared.dispose();
  });

  it('a Proxy of a typed array, sparse positions, forged and cloned policies -> INVALID_ARGUMENT', () => {
    const { rng, a, unchanged } = fixture('lookalikes');
    const k = randn(rng, ROW);
    const v = randn(rng, ROW);
    const cases: [string, () => unknown][] = [
      ['Proxy keys', () => a.append(0, new Proxy(k, {}), v)],
      ['Proxy queries', () => a.attention(0, new Proxy(randn(rng, QROW), {}))],
      ['Proxy out', () => a.attention(0, randn(rng, QROW), { out: new Proxy(new Float32Array(QROW), {}) })],
      ['Proxy keys, native', () => a.native.append(0, new Proxy(k, {}), v, null)],
      ['sparse positions [100, <hole>]', () => a.append(0, randn(rng, 2 * ROW), randn(rng, 2 * ROW), { positions: bad([100, , ]) })],
      ['positions with undefined', () => a.append(0, randn(rng, 2 * ROW), randn(rng, 2 * ROW), { positions: bad([100, undefined]) })],
      ['forged policy', () => a.evict(Object.create(EvictionPolicy.prototype), { keep: 4 })],
      ['cloned policy', () => a.evict(structuredClone(EvictionPolicy.h2o()), { keep: 4 })],
      ['plain object policy', () => a.evict(bad({ kind: 'h2o', sinks: 0, recent: 0 }), { keep: 4 })],
      ['forged policy scores', () => EvictionPolicy.prototype.scores.call(Object.create(EvictionPolicy.prototype), a, 0, 0)],
    ];
    for (const [what, fn] of cases) {
      const e = expectKVError(fn, 'INVALID_ARGUMENT', what);
      expect(e).toBeInstanceOf(KVCacheError);
      unchanged(what);
    }
    a.cache.dispose();
  });
});
