// Bad input, one `it` per class. Every failure is a KVCacheError with the contract's code, and
// afterwards the cache holds exactly what it held before (rows, lengths, positions, stats).
import { describe, expect, it } from 'vitest';
import { KVCache, type Sequence } from '../../lib/index';
import { randn, testRng } from '../reference/random';
import { type Shape, expectKVError, expectSameCache, randomRows, snapshotCache } from './helpers';

const shape: Shape = { layers: 2, kvHeads: 2, headDim: 8, keys: 'f16', values: 'f16' };
const base = { layers: 2, kvHeads: 2, headDim: 8 };
const QH = 4;
const ROW = shape.kvHeads * shape.headDim; // elements per token of keys or values
const QROW = QH * shape.headDim; // elements per query token

/** A cache with two sequences holding rows and an empty one, and a check that nothing changed. */
function fixture(label: string) {
  const rng = testRng(label);
  const cache = new KVCache({ ...base, queryHeads: QH, blockSize: 16, threads: 1 });
  const a = cache.createSequence();
  const b = cache.createSequence();
  for (const [seq, T] of [[a, 20], [b, 3]] as [Sequence, number][]) {
    for (let l = 0; l < 2; l++) {
      const r = randomRows(rng, shape, T + l);
      seq.append(l, r.keys, r.values);
    }
  }
  const empty = cache.createSequence();
  const seqs = [a, b, empty];
  const before = snapshotCache(cache, seqs);
  const unchanged = (what: string) => expectSameCache(cache, seqs, before, `after ${what}`);
  return { rng, cache, a, b, empty, unchanged };
}

// `any` casts: these calls are wrong on purpose, as plain JS callers could write them.
/* eslint-disable @typescript-eslint/no-explicit-any */
const bad = (x: unknown) => x as any;

describe('bad input', () => {
  it('wrong types -> INVALID_ARGUMENT', () => {
    const { rng, a, unchanged } = fixture('types');
    const k = randn(rng, 2 * ROW);
    const v = randn(rng, 2 * ROW);
    const cases: [string, () => unknown][] = [
      ['number as keys', () => a.append(0, bad(5), v)],
      ['plain array as keys and values', () => a.append(0, bad(Array.from(k)), bad(Array.from(v)))],
      ['Float64Array keys and values', () => a.append(0, bad(new Float64Array(k)), bad(new Float64Array(v)))],
      ['Int16Array keys and values', () => a.append(0, bad(new Int16Array(2 * ROW)), bad(new Int16Array(2 * ROW)))],
      ['Float32Array keys with Uint16Array values', () => a.append(0, k, new Uint16Array(2 * ROW))],
      ['Uint16Array keys with Float32Array values', () => a.append(0, new Uint16Array(2 * ROW), v)],
      ['undefined values', () => a.append(0, k, bad(undefined))],
      ['Float32Array positions', () => a.append(0, k, v, { positions: bad(new Float32Array([100, 101])) })],
      ['non-integer positions', () => a.append(0, k, v, { positions: [100, 100.5] })],
      ['string layer', () => a.append(bad('0'), k, v)],
      ['Float64Array queries', () => a.attention(0, bad(new Float64Array(QROW)))],
      ['number queries', () => a.attention(0, bad(3))],
      ['Float64Array out', () => a.attention(0, randn(rng, QROW), { out: bad(new Float64Array(QROW)) })],
      ['Float64Array lse', () => a.attention(0, randn(rng, QROW), { lse: bad(new Float64Array(QH)) })],
      ['importSequence of a string', () => a.cache.importSequence(bad('bytes'))],
      ['attentionBatch with a non-array', () => a.cache.attentionBatch(0, bad(a), randn(rng, QROW))],
      ['attentionBatch with a non-sequence', () => a.cache.attentionBatch(0, bad([{}]), randn(rng, QROW))],
    ];
    for (const [what, fn] of cases) {
      expectKVError(fn, 'INVALID_ARGUMENT', what);
      unchanged(what);
    }
  });

  it('wrong lengths -> SHAPE_MISMATCH', () => {
    const { rng, cache, a, b, unchanged } = fixture('lengths');
    const cases: [string, () => unknown][] = [
      ['keys not a whole number of tokens', () => a.append(0, randn(rng, ROW + 1), randn(rng, ROW + 1))],
      ['zero tokens', () => a.append(0, new Float32Array(0), new Float32Array(0))],
      ['keys and values of different lengths', () => a.append(0, randn(rng, 2 * ROW), randn(rng, ROW))],
      ['f16 keys and values of different lengths', () => a.append(0, new Uint16Array(2 * ROW), new Uint16Array(3 * ROW))],
      ['positions shorter than T', () => a.append(0, randn(rng, 2 * ROW), randn(rng, 2 * ROW), { positions: [50] })],
      ['positions longer than T', () => a.append(0, randn(rng, ROW), randn(rng, ROW), { positions: [50, 51] })],
      ['queries not a whole number of tokens', () => a.attention(0, randn(rng, QROW + 3))],
      ['queries of kvHeads instead of queryHeads', () => a.attention(0, randn(rng, ROW))],
      ['no queries', () => a.attention(0, new Float32Array(0))],
      ['out too short', () => a.attention(0, randn(rng, QROW), { out: new Float32Array(QROW - 1) })],
      ['out too long', () => a.attention(0, randn(rng, QROW), { out: new Float32Array(QROW + 1) })],
      ['lse too short', () => a.attention(0, randn(rng, 2 * QROW), { lse: new Float32Array(QH) })],
      ['batch queries for one sequence of two', () => cache.attentionBatch(0, [a, b], randn(rng, QROW))],
      ['batch out of the wrong length', () => cache.attentionBatch(0, [a, b], randn(rng, 2 * QROW), { out: new Float32Array(QROW) })],
    ];
    for (const [what, fn] of cases) {
      expectKVError(fn, 'SHAPE_MISMATCH', what);
      unchanged(what);
    }
  });

  it('layer / kvHead / n out of range or not an integer -> INVALID_ARGUMENT', () => {
    const { rng, cache, a, b, unchanged } = fixture('indices');
    const k = randn(rng, ROW);
    const q = randn(rng, QROW);
    const cases: [string, () => unknown][] = [];
    for (const layer of [-1, 2, 0.5, NaN, Infinity]) {
      cases.push([`append layer ${layer}`, () => a.append(layer, k, k)]);
      cases.push([`attention layer ${layer}`, () => a.attention(layer, q)]);
      cases.push([`lengths layer ${layer}`, () => a.lengths(layer)]);
      cases.push([`nextPosition layer ${layer}`, () => a.nextPosition(layer)]);
      cases.push([`read layer ${layer}`, () => a.read(layer, 0)]);
      cases.push([`length layer ${layer}`, () => a.length(layer, 0)]);
      cases.push([`attentionBatch layer ${layer}`, () => cache.attentionBatch(layer, [a, b], randn(rng, 2 * QROW))]);
    }
    for (const head of [-1, 2, 1.5, NaN]) {
      cases.push([`read kvHead ${head}`, () => a.read(0, head)]);
      cases.push([`length kvHead ${head}`, () => a.length(1, head)]);
    }
    for (const n of [-1, 2.5, NaN]) cases.push([`truncate(${n})`, () => a.truncate(n)]);
    for (const [what, fn] of cases) {
      expectKVError(fn, 'INVALID_ARGUMENT', what);
      unchanged(what);
    }
  });

  it('unknown or misspelled constructor options and bad option values -> INVALID_ARGUMENT', () => {
    const ok = { ...base };
    expect(() => new KVCache(ok).dispose()).not.toThrow();
    const cases: [string, unknown][] = [
      ['no options', undefined],
      ['null', null],
      ['missing layers', { kvHeads: 2, headDim: 8 }],
      ['blocksize (misspelled)', { ...ok, blocksize: 16 }],
      ['head_dim (misspelled)', { ...ok, head_dim: 8 }],
      ['kvheads (misspelled)', { ...ok, kvheads: 2 }],
      ['maxbytes (misspelled)', { ...ok, maxbytes: 1 << 20 }],
      ['unknown option', { ...ok, compression: 'zstd' }],
      ['layers 0', { ...ok, layers: 0 }],
      ['layers -1', { ...ok, layers: -1 }],
      ['layers 1.5', { ...ok, layers: 1.5 }],
      ['layers "2"', { ...ok, layers: '2' }],
      ['layers NaN', { ...ok, layers: NaN }],
      ['kvHeads 0', { ...ok, kvHeads: 0 }],
      ['headDim 0', { ...ok, headDim: 0 }],
      ['headDim odd', { ...ok, headDim: 7 }],
      ['blockSize 0', { ...ok, blockSize: 0 }],
      ['blockSize 4097', { ...ok, blockSize: 4097 }],
      ['blockSize 2.5', { ...ok, blockSize: 2.5 }],
      ['keys f64', { ...ok, keys: 'f64' }],
      ['values F16 (case)', { ...ok, values: 'F16' }],
      ['keys as a number', { ...ok, keys: 16 }],
      ['maxBytes -1', { ...ok, maxBytes: -1 }],
      ['maxBytes string', { ...ok, maxBytes: '1GB' }],
      ['maxBytes NaN', { ...ok, maxBytes: NaN }],
      ['device tpu', { ...ok, device: 'tpu' }],
      ['threads 0', { ...ok, threads: 0 }],
      ['threads 1.5', { ...ok, threads: 1.5 }],
      ['rotate "yes"', { ...ok, rotate: 'yes' }],
      ['rotate with an unknown key', { ...ok, rotate: { key: true } }],
      ['groupSize 0', { ...ok, groupSize: 0 }],
    ];
    for (const [what, opts] of cases) {
      expectKVError(() => new KVCache(bad(opts)), 'INVALID_ARGUMENT', what);
    }
    expectKVError(() => KVCache.bytesPerToken(bad({ ...ok, blocksize: 16 })), 'INVALID_ARGUMENT', 'bytesPerToken, misspelled');
  });

  it('unknown or misspelled names in append / attention / attentionBatch options -> INVALID_ARGUMENT', () => {
    const { rng, cache, a, b, unchanged } = fixture('call options');
    const k = randn(rng, ROW);
    const cases: [string, () => unknown][] = [
      ['append { position }', () => a.append(0, k, k, bad({ position: [100] }))],
      ['append options not an object', () => a.append(0, k, k, bad(7))],
      ['attention { outt }', () => a.attention(0, randn(rng, QROW), bad({ outt: new Float32Array(QROW) }))],
      ['attention { LSE }', () => a.attention(0, randn(rng, QROW), bad({ LSE: new Float32Array(QH) }))],
      ['attentionBatch { Out }', () => cache.attentionBatch(0, [a, b], randn(rng, 2 * QROW), bad({ Out: new Float32Array(2 * QROW) }))],
    ];
    for (const [what, fn] of cases) {
      expectKVError(fn, 'INVALID_ARGUMENT', what);
      unchanged(what);
    }
  });

  it('queryHeads not a multiple of kvHeads -> INVALID_ARGUMENT', () => {
    for (const queryHeads of [3, 1, 0, -4, 4.5]) {
      expectKVError(() => new KVCache({ ...base, queryHeads }), 'INVALID_ARGUMENT', `queryHeads ${queryHeads} with kvHeads 2`);
    }
    expect(new KVCache({ ...base, queryHeads: 6 }).config.queryHeads).toBe(6);
  });

  it('groupSize not dividing headDim -> INVALID_ARGUMENT', () => {
    for (const groupSize of [24, 48, 128, 3]) {
      expectKVError(() => new KVCache({ ...base, headDim: 64, groupSize }), 'INVALID_ARGUMENT', `groupSize ${groupSize}, headDim 64`);
      expectKVError(() => new KVCache({ ...base, headDim: 64, groupSize, keys: 'int8' }), 'INVALID_ARGUMENT', `int8, groupSize ${groupSize}`);
    }
    const c = new KVCache({ ...base, headDim: 64, groupSize: 16 });
    expect(c.config.groupSize).toBe(16);
    c.dispose();
  });

  it('attention with Tq larger than the stream -> SHAPE_MISMATCH', () => {
    const { rng, cache, a, b, empty, unchanged } = fixture('tq');
    const cases: [string, () => unknown][] = [
      ['Tq 4 over 3 rows', () => b.attention(0, randn(rng, 4 * QROW))],
      ['Tq 5 over 4 rows (layer 1)', () => b.attention(1, randn(rng, 5 * QROW))],
      ['Tq 21 over 20 rows', () => a.attention(0, randn(rng, 21 * QROW))],
      ['Tq 1 over an empty sequence', () => empty.attention(0, randn(rng, QROW))],
      ['batch with an empty sequence', () => cache.attentionBatch(0, [a, empty], randn(rng, 2 * QROW))],
    ];
    for (const [what, fn] of cases) {
      expectKVError(fn, 'SHAPE_MISMATCH', what);
      unchanged(what);
    }
    // the boundary itself is fine
    expect(b.attention(0, randn(rng, 3 * QROW)).length).toBe(3 * QROW);
  });

  it('use after free / dispose -> DISPOSED, also for sequences alive when the cache is disposed', () => {
    const { rng, cache, a, b } = fixture('disposed');
    const k = randn(rng, ROW);
    a.free();
    a.free(); // idempotent
    const before = snapshotCache(cache, [b]);
    expect(a.freed).toBe(true);
    expect(b.freed).toBe(false);
    const onSeq = (s: Sequence): [string, () => unknown][] => [
      ['append', () => s.append(0, k, k)],
      ['attention', () => s.attention(0, randn(rng, QROW))],
      ['read', () => s.read(0, 0)],
      ['length', () => s.length(0, 0)],
      ['lengths', () => s.lengths(0)],
      ['nextPosition', () => s.nextPosition(0)],
      ['fork', () => s.fork()],
      ['truncate', () => s.truncate(1)],
      ['export', () => s.export()],
    ];
    for (const [what, fn] of onSeq(a)) expectKVError(fn, 'DISPOSED', `freed sequence: ${what}`);
    expectKVError(() => cache.attentionBatch(0, [b, a], randn(rng, 2 * QROW)), 'DISPOSED', 'attentionBatch with a freed sequence');
    expectSameCache(cache, [b], before, 'after use of a freed sequence');
    expect(cache.stats().sequences).toBe(2); // b and the fixture's empty sequence

    const bytes = b.export();
    expect(cache.disposed).toBe(false);
    cache.dispose();
    expect(cache.disposed).toBe(true);
    expect(b.freed, 'a sequence of a disposed cache counts as freed').toBe(true);
    expect(() => cache.dispose()).not.toThrow(); // idempotent
    const onCache: [string, () => unknown][] = [
      ['createSequence', () => cache.createSequence()],
      ['importSequence', () => cache.importSequence(bytes)],
      ['attentionBatch', () => cache.attentionBatch(0, [b], randn(rng, QROW))],
      ['stats', () => cache.stats()],
    ];
    for (const [what, fn] of onCache) expectKVError(fn, 'DISPOSED', `disposed cache: ${what}`);
    for (const [what, fn] of onSeq(b)) expectKVError(fn, 'DISPOSED', `sequence of a disposed cache: ${what}`);
    for (const [what, fn] of onSeq(a)) expectKVError(fn, 'DISPOSED', `freed sequence of a disposed cache: ${what}`);
  });

  it('attentionBatch with a sequence of another cache -> INVALID_ARGUMENT', () => {
    const { rng, cache, a, b, unchanged } = fixture('foreign');
    const other = new KVCache({ ...base, queryHeads: QH, blockSize: 16, threads: 1 }); // same config
    const c = other.createSequence();
    const r = randomRows(rng, shape, 5);
    c.append(0, r.keys, r.values);
    expectKVError(() => cache.attentionBatch(0, [a, c], randn(rng, 2 * QROW)), 'INVALID_ARGUMENT', 'foreign second');
    expectKVError(() => cache.attentionBatch(0, [c], randn(rng, QROW)), 'INVALID_ARGUMENT', 'foreign only');
    expectKVError(() => other.attentionBatch(0, [c, b], randn(rng, 2 * QROW)), 'INVALID_ARGUMENT', 'the other way round');
    unchanged('foreign sequences');
    expect(c.length(0, 1)).toBe(5);
    other.dispose();
  });

  it('corrupted export bytes -> CORRUPT_DATA; a different config -> SHAPE_MISMATCH or INVALID_ARGUMENT', () => {
    const { cache, a, unchanged } = fixture('corrupt');
    const good = a.export();
    expect(good).toBeInstanceOf(Uint8Array);
    const variants: [string, Uint8Array][] = [];
    for (const at of [0, 1, 2, 3]) {
      const m = good.slice();
      m[at]! ^= 0x5a;
      variants.push([`magic byte ${at} changed`, m]);
    }
    for (const frac of [0.1, 0.25, 0.5, 0.75, 0.9]) {
      const at = Math.floor(good.length * frac);
      const m = good.slice();
      m[at]! ^= 0x01; // a single bit
      variants.push([`bit flip at byte ${at} of ${good.length}`, m]);
    }
    const last = good.slice();
    last[last.length - 1]! ^= 0x80;
    variants.push(['last byte changed', last]);
    variants.push(['truncated by one byte', good.slice(0, good.length - 1)]);
    variants.push(['truncated to half', good.slice(0, good.length >> 1)]);
    variants.push(['truncated to 8 bytes', good.slice(0, 8)]);
    variants.push(['empty', new Uint8Array(0)]);
    const longer = new Uint8Array(good.length + 4);
    longer.set(good);
    variants.push(['4 trailing bytes', longer]);
    for (const [what, bytes] of variants) {
      expectKVError(() => cache.importSequence(bytes), 'CORRUPT_DATA', what);
      unchanged(what);
    }
    // the untouched bytes still import
    cache.importSequence(good).free();
    unchanged('import of the good bytes, then free');

    const other = new KVCache({ ...base, headDim: 16, queryHeads: QH, threads: 1 });
    let thrown: unknown;
    try {
      other.importSequence(good);
    } catch (e) {
      thrown = e;
    }
    expect(thrown, 'import into a cache with another headDim').toBeDefined();
    expect((thrown as { code?: string }).code).toMatch(/^(SHAPE_MISMATCH|INVALID_ARGUMENT)$/);
    expect(other.stats().sequences).toBe(0);
    other.dispose();
  });
});
