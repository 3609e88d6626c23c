// Shared pieces of the foundation tests: a shadow model of what a sequence must hold (rows as
// the reference formats predict them), snapshots of a cache for "nothing changed" checks, and
// the KVCacheError assertion. Library-facing, but only through the public API.
import { expect } from 'vitest';
import { KVCache, KVCacheError, Sequence } from '../../lib/index';
import { type StreamRows, headRows } from '../reference/attention-reference';
import { expectBitExact, expectIntsEqual } from '../reference/compare';
import { type PlainStorage, storedValues } from '../reference/formats-reference';
import { type Rng, randn } from '../reference/random';

export interface Shape {
  layers: number;
  kvHeads: number;
  headDim: number;
  keys: PlainStorage;
  values: PlainStorage;
}

/** Assert that fn throws a KVCacheError with this code; returns the error. */
export function expectKVError(fn: () => unknown, code: string, label = ''): KVCacheError {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  if (thrown === undefined) expect.fail(`${label ? label + ': ' : ''}expected KVCacheError ${code}, nothing was thrown`);
  if (!(thrown instanceof KVCacheError)) {
    expect.fail(`${label ? label + ': ' : ''}expected KVCacheError ${code}, got ${String(thrown)}` +
      ` (${(thrown as object)?.constructor?.name})`);
  }
  const err = thrown as KVCacheError;
  expect(err.code, `${label ? label + ': ' : ''}${err.message}`).toBe(code);
  expect(err.name).toBe('KVCacheError');
  expect(err).toBeInstanceOf(Error);
  return err;
}

function pushAll(dst: number[], src: ArrayLike<number>): void {
  for (let i = 0; i < src.length; i++) dst.push(src[i]!);
}

/** One stream as the shadow model predicts it. */
interface ShadowStream {
  keys: number[]; // stored values, [T * D]
  values: number[];
  positions: number[];
}

/**
 * What a Sequence must hold, kept in plain arrays: append rounds through the reference formats,
 * truncate drops rows by position, clone models fork.
 */
export class Shadow {
  streams: ShadowStream[][]; // [layer][kvHead]
  next: number[]; // nextPosition per layer

  constructor(readonly shape: Shape) {
    this.streams = Array.from({ length: shape.layers }, () =>
      Array.from({ length: shape.kvHeads }, () => ({ keys: [], values: [], positions: [] })));
    this.next = new Array(shape.layers).fill(0);
  }

  append(layer: number, keys: Float32Array | Uint16Array, values: Float32Array | Uint16Array, positions?: ArrayLike<number>): void {
    const { kvHeads, headDim } = this.shape;
    const k = storedValues(this.shape.keys, keys);
    const v = storedValues(this.shape.values, values);
    const T = k.length / (kvHeads * headDim);
    const pos = positions ? Array.from(positions) : Array.from({ length: T }, (_, i) => this.next[layer]! + i);
    for (let h = 0; h < kvHeads; h++) {
      const s = this.streams[layer]![h]!;
      pushAll(s.keys, headRows(k, kvHeads, headDim, h));
      pushAll(s.values, headRows(v, kvHeads, headDim, h));
      pushAll(s.positions, pos);
    }
    this.next[layer] = pos[pos.length - 1]! + 1;
  }

  truncate(n: number): void {
    const D = this.shape.headDim;
    for (let l = 0; l < this.shape.layers; l++) {
      for (const s of this.streams[l]!) {
        let T = s.positions.length;
        while (T > 0 && s.positions[T - 1]! >= n) T--;
        s.positions.length = T;
        s.keys.length = T * D;
        s.values.length = T * D;
      }
      this.next[l] = Math.min(this.next[l]!, n);
    }
  }

  clone(): Shadow {
    const c = new Shadow(this.shape);
    c.streams = this.streams.map((l) => l.map((s) => ({ keys: [...s.keys], values: [...s.values], positions: [...s.positions] })));
    c.next = [...this.next];
    return c;
  }

  length(layer: number, h: number): number {
    return this.streams[layer]![h]!.positions.length;
  }

  /** Rows of one layer for the attention reference. */
  rows(layer: number): StreamRows[] {
    return this.streams[layer]!.map((s) => ({ keys: s.keys, values: s.values, positions: s.positions }));
  }

  /** read(), lengths(), length() and nextPosition() of every layer and kv head equal the model, bit-exactly. */
  expectMatches(seq: Sequence, label: string): void {
    const { layers, kvHeads } = this.shape;
    for (let l = 0; l < layers; l++) {
      expect(seq.nextPosition(l), `${label}: nextPosition(${l})`).toBe(this.next[l]);
      const lens = seq.lengths(l);
      expect(lens, `${label}: lengths(${l}) type`).toBeInstanceOf(Int32Array);
      expectIntsEqual(lens, this.streams[l]!.map((s) => s.positions.length), `${label}: lengths(${l})`);
      for (let h = 0; h < kvHeads; h++) {
        const s = this.streams[l]![h]!;
        const where = `${label}: layer ${l} kv head ${h}`;
        expect(seq.length(l, h), `${where}: length`).toBe(s.positions.length);
        const r = seq.read(l, h);
        expectBitExact(r.keys, new Float32Array(s.keys), `${where}: keys`);
        expectBitExact(r.values, new Float32Array(s.values), `${where}: values`);
        expect(r.positions, `${where}: positions type`).toBeInstanceOf(Int32Array);
        expectIntsEqual(r.positions, s.positions, `${where}: positions`);
        expectBitExact(r.beta, new Float32Array(s.positions.length), `${where}: beta`);
      }
    }
  }
}

export function randomRows(rng: Rng, shape: Pick<Shape, 'kvHeads' | 'headDim'>, T: number): { keys: Float32Array; values: Float32Array } {
  return { keys: randn(rng, T * shape.kvHeads * shape.headDim), values: randn(rng, T * shape.kvHeads * shape.headDim) };
}

export interface SeqSnapshot {
  lengths: number[][];
  next: number[];
  rows: { keys: Float32Array; values: Float32Array; beta: Float32Array; positions: Int32Array }[][];
}

export function snapshotSeq(seq: Sequence, layers: number, kvHeads: number): SeqSnapshot {
  const snap: SeqSnapshot = { lengths: [], next: [], rows: [] };
  for (let l = 0; l < layers; l++) {
    snap.lengths.push(Array.from(seq.lengths(l)));
    snap.next.push(seq.nextPosition(l));
    snap.rows.push(Array.from({ length: kvHeads }, (_, h) => {
      const r = seq.read(l, h);
      // copies: a view that the library later overwrites must not make the check pass
      return { keys: r.keys.slice(), values: r.values.slice(), beta: r.beta.slice(), positions: r.positions.slice() };
    }));
  }
  return snap;
}

export function expectSameSeq(seq: Sequence, before: SeqSnapshot, label: string): void {
  const layers = before.rows.length;
  const kvHeads = before.rows[0]!.length;
  const now = snapshotSeq(seq, layers, kvHeads);
  for (let l = 0; l < layers; l++) {
    expect(now.lengths[l], `${label}: lengths(${l})`).toEqual(before.lengths[l]);
    expect(now.next[l], `${label}: nextPosition(${l})`).toBe(before.next[l]);
    for (let h = 0; h < kvHeads; h++) {
      const a = now.rows[l]![h]!;
      const b = before.rows[l]![h]!;
      const where = `${label}: layer ${l} kv head ${h}`;
      expectBitExact(a.keys, b.keys, `${where}: keys`);
      expectBitExact(a.values, b.values, `${where}: values`);
      expectBitExact(a.beta, b.beta, `${where}: beta`);
      expectIntsEqual(a.positions, b.positions, `${where}: positions`);
    }
  }
}

/** Snapshot of a whole cache: its stats and every listed live sequence. */
export function snapshotCache(cache: KVCache, seqs: Sequence[]) {
  const { layers, kvHeads } = cache.config;
  return { stats: { ...cache.stats() }, seqs: seqs.map((s) => snapshotSeq(s, layers, kvHeads)) };
}

export function expectSameCache(cache: KVCache, seqs: Sequence[], before: ReturnType<typeof snapshotCache>, label: string): void {
  expect({ ...cache.stats() }, `${label}: stats`).toEqual(before.stats);
  seqs.forEach((s, i) => expectSameSeq(s, before.seqs[i]!, `${label}: sequence ${i}`));
}

/** Output buffer filled with NaN, so a kernel that skips an element cannot pass by luck. */
export function poisoned(n: number): Float32Array {
  return new Float32Array(n).fill(NaN);
}
