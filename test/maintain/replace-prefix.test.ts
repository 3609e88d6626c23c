// The swap of background maintenance (cpp/core/replace_prefix.cpp): a snapshot compacted or
// evicted off to the side replaces the rows it was taken of, and every row the sequence
// gained meanwhile is kept bit-exact (rows, positions, beta, and attention over them).
import { describe, expect, it } from 'vitest';
import { Compactor, EvictionPolicy, KVCache, Sequence } from '../../lib/index';
import { native } from '../../lib/native/binding';
import { expectBitExact, expectIntsEqual } from '../reference/compare';
import { randn, testRng, type Rng } from '../reference/random';
import { expectKVError, snapshotSeq, expectSameSeq } from '../foundation/helpers';

const shape = { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4 } as const;
const ROW = shape.kvHeads * shape.headDim;

function makeCache(blockSize = 16): KVCache {
  return new KVCache({ ...shape, blockSize, keys: 'f16', values: 'f16', threads: 1, queryReservoir: 64 });
}

function snapshotOf(seq: Sequence): Sequence {
  return new Sequence(seq.cache, native().snapshot(seq.native));
}

interface Appended {
  keys: Float32Array;
  values: Float32Array;
}

function grow(rng: Rng, seq: Sequence, layer: number, T: number): Appended {
  const keys = randn(rng, T * ROW);
  const values = randn(rng, T * ROW);
  seq.append(layer, keys, values);
  return { keys, values };
}

/** Decode-like traffic: appends with recorded queries, so compaction has reference queries. */
function prefill(rng: Rng, seq: Sequence, rows: readonly number[]): void {
  rows.forEach((T, l) => {
    grow(rng, seq, l, T);
    seq.attention(l, randn(rng, 4 * shape.queryHeads * shape.headDim), { recordQueries: true });
  });
}

type Rows = ReturnType<Sequence['read']>;

function concatRows(a: Rows, b: Rows, from: number): Rows {
  const D = shape.headDim;
  const cat = (x: Float32Array, y: Float32Array, w: number) => {
    const out = new Float32Array(x.length + y.length - from * w);
    out.set(x);
    out.set(y.subarray(from * w), x.length);
    return out;
  };
  const positions = new Int32Array(a.positions.length + b.positions.length - from);
  positions.set(a.positions);
  positions.set(b.positions.subarray(from), a.positions.length);
  return { keys: cat(a.keys, b.keys, D), values: cat(a.values, b.values, D), beta: cat(a.beta, b.beta, 1), positions };
}

function expectRows(actual: Rows, expected: Rows, where: string): void {
  expectBitExact(actual.keys, expected.keys, `${where}: keys`);
  expectBitExact(actual.values, expected.values, `${where}: values`);
  expectBitExact(actual.beta, expected.beta, `${where}: beta`);
  expectIntsEqual(actual.positions, expected.positions, `${where}: positions`);
}

/** Blocks the live sequences reference, counted from their lengths (no fork shares any here). */
function blocksOf(seqs: Sequence[], blockSize: number): number {
  let n = 0;
  for (const s of seqs) for (let l = 0; l < shape.layers; l++) for (const len of s.lengths(l)) n += Math.ceil(len / blockSize);
  return n;
}

describe('snapshot + replacePrefix', () => {
  for (const aligned of [false, true]) {
    it(`a compaction of a snapshot loses no row appended while it ran (${aligned ? 'block-aligned: blocks shared' : 'unaligned: rows copied'})`, async () => {
      const rng = testRng();
      const B = 16;
      const cache = makeCache(B);
      const seq = cache.createSequence();
      prefill(rng, seq, aligned ? [96, 128] : [101, 90]);
      const before = [0, 1].map((l) => Array.from(seq.lengths(l)));
      const snap = snapshotOf(seq);
      // Off the main thread; meanwhile the sequence appends and decodes.
      const job = new Compactor({ ratio: 0.5 }).compact(snap, { targetTokens: aligned ? 48 : 41, protect: { sinks: 2, recent: 8 } });
      const added = [grow(rng, seq, 0, aligned ? 32 : 37), grow(rng, seq, 1, aligned ? 16 : 5)];
      seq.attention(1, randn(rng, shape.queryHeads * shape.headDim));
      await job;
      const tails = [0, 1].map((l) => [0, 1].map((h) => seq.read(l, h)));
      const compacted = [0, 1].map((l) => [0, 1].map((h) => snap.read(l, h)));
      const next = [seq.nextPosition(0), seq.nextPosition(1)];
      // The reference: the compacted snapshot with the same rows appended at the same positions.
      const ref = snap.fork();
      for (let l = 0; l < 2; l++) {
        const T = added[l]!.keys.length / ROW;
        const positions = Int32Array.from({ length: T }, (_, i) => next[l]! - T + i);
        ref.append(l, added[l]!.keys, added[l]!.values, { positions });
      }
      native().replacePrefix(seq.native, snap.native);
      for (let l = 0; l < 2; l++) {
        expect(seq.nextPosition(l)).toBe(next[l]);
        for (let h = 0; h < 2; h++) {
          const expected = concatRows(compacted[l]![h]!, tails[l]![h]!, before[l]![h]!);
          expectRows(seq.read(l, h), expected, `layer ${l} head ${h}`);
          expectRows(ref.read(l, h), expected, `reference layer ${l} head ${h}`);
        }
      }
      // Attention over the appended rows (causal: the last Tq rows' own queries) and a decode step.
      for (const [l, tq] of [[0, 7], [1, 1]] as const) {
        const q = randn(rng, tq * shape.queryHeads * shape.headDim);
        const lseA = new Float32Array(tq * shape.queryHeads);
        const lseB = new Float32Array(tq * shape.queryHeads);
        const a = seq.attention(l, q, { lse: lseA });
        const b = ref.attention(l, q, { lse: lseB });
        expectBitExact(a, b, `attention layer ${l}`);
        expectBitExact(lseA, lseB, `lse layer ${l}`);
      }
      ref.free();
      snap.free();
      // Every block the pool holds belongs to the sequence (none leaked, none freed twice).
      expect(cache.stats().blocksUsed).toBe(blocksOf([seq], B));
      cache.dispose();
    });
  }

  it('an eviction of a snapshot swaps in the same way, scores follow their rows', () => {
    const rng = testRng();
    const cache = makeCache(8);
    const seq = cache.createSequence();
    prefill(rng, seq, [60, 61]);
    seq.attention(0, randn(rng, shape.queryHeads * shape.headDim), { accumulateScores: true });
    const P = Array.from(seq.lengths(0));
    const snap = snapshotOf(seq);
    snap.evict(EvictionPolicy.keyNorm({ sinks: 2, recent: 4 }), { keep: 20 });
    grow(rng, seq, 0, 3);
    const kept = snap.read(0, 1);
    const keptScores = snap.scores(0, 1);
    const tail = seq.read(0, 1);
    const tailScores = seq.scores(0, 1);
    native().replacePrefix(seq.native, snap.native);
    expectRows(seq.read(0, 1), concatRows(kept, tail, P[1]!), 'evicted + appended');
    const scores = seq.scores(0, 1);
    expectBitExact(scores.subarray(0, 20), keptScores, 'scores of the kept rows');
    expectBitExact(scores.subarray(20), tailScores.subarray(P[1]!), 'scores of the appended rows');
    snap.free();
    expect(cache.stats().blocksUsed).toBe(blocksOf([seq], 8));
    cache.dispose();
  });

  it('refuses (ABORTED, nothing changed) when the sequence changed below the snapshot', () => {
    const rng = testRng();
    const cache = makeCache(8);
    const seq = cache.createSequence();
    prefill(rng, seq, [40, 40]);
    // Truncating only rows appended after the snapshot keeps it valid.
    let snap = snapshotOf(seq);
    snap.evict(EvictionPolicy.keyNorm({ sinks: 1, recent: 2 }), { keep: 10 });
    grow(rng, seq, 0, 5);
    grow(rng, seq, 1, 5);
    seq.truncate(42);
    grow(rng, seq, 0, 1);
    grow(rng, seq, 1, 1);
    native().replacePrefix(seq.native, snap.native);
    expect(Array.from(seq.lengths(0))).toEqual([13, 13]);
    // A second swap of the same snapshot, and a swap after a truncation below it, are refused.
    expectKVError(() => native().replacePrefix(seq.native, snap.native), 'ABORTED', 'second swap');
    snap.free();
    snap = snapshotOf(seq);
    snap.evict(EvictionPolicy.keyNorm({ sinks: 1, recent: 2 }), { keep: 6 });
    seq.truncate(30);
    let state = snapshotSeq(seq, 2, 2);
    expectKVError(() => native().replacePrefix(seq.native, snap.native), 'ABORTED', 'after truncate');
    expectSameSeq(seq, state, 'refused swap after truncate');
    snap.free();
    // An eviction of the sequence itself invalidates a snapshot too.
    snap = snapshotOf(seq);
    seq.evict(EvictionPolicy.keyNorm({ sinks: 1, recent: 2 }), { keep: 4 });
    state = snapshotSeq(seq, 2, 2);
    expectKVError(() => native().replacePrefix(seq.native, snap.native), 'ABORTED', 'after evict');
    expectSameSeq(seq, state, 'refused swap after evict');
    // A sequence that is not the snapshot's origin is refused; so is a plain fork.
    const other = cache.createSequence();
    expectKVError(() => native().replacePrefix(other.native, snap.native), 'INVALID_ARGUMENT', 'other sequence');
    const fork = seq.fork();
    expectKVError(() => native().replacePrefix(seq.native, fork.native), 'INVALID_ARGUMENT', 'plain fork');
    cache.dispose();
  });
});
