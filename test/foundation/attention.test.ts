// Sequence.attention against the float64 reference: head_dim 8/64/128/256, GQA ratios 1/4/8,
// decode (Tq = 1) and causal Tq > 1, blockSize not dividing T, f32/f16/bf16 storage, lse, `out`.
// Outputs are poisoned (NaN) before each call; tolerances: see attention-tolerance.ts.
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import type { PlainStorage } from '../reference/formats-reference';
import { type Rng, positionsFrom, randn, testRng } from '../reference/random';
import { LSE_TOL, checkTight, outputTol } from './attention-tolerance';
import { Shadow, poisoned, randomRows } from './helpers';

interface Case {
  headDim: number;
  kvHeads: number;
  ratio: number;
  blockSize: number;
  keys: PlainStorage;
  values: PlainStorage;
  chunks: number[]; // rows appended per append() call
  tq: number;
  threads?: number;
}

/** Build a cache per the case on layer 1 of 2 (layer 0 holds other rows), run attention, compare. */
function runCase(c: Case, rng: Rng, label: string) {
  const queryHeads = c.kvHeads * c.ratio;
  const shape = { layers: 2, kvHeads: c.kvHeads, headDim: c.headDim, keys: c.keys, values: c.values };
  const cache = new KVCache({ ...shape, queryHeads, blockSize: c.blockSize, threads: c.threads ?? 1 });
  const seq = cache.createSequence();
  const shadow = new Shadow(shape);
  const other = randomRows(rng, shape, 3);
  seq.append(0, other.keys, other.values); // a different layer must not leak into layer 1
  for (const T of c.chunks) {
    const { keys, values } = randomRows(rng, shape, T);
    seq.append(1, keys, values);
    shadow.append(1, keys, values);
  }
  const queries = randn(rng, c.tq * queryHeads * c.headDim);
  const out = poisoned(queries.length);
  const lse = poisoned(c.tq * queryHeads);
  const got = seq.attention(1, queries, { out, lse });
  expect(got, `${label}: returns options.out`).toBe(out);
  const rows = shadow.rows(1);
  const ref = attentionReference({ headDim: c.headDim, queryHeads, streams: rows, queries });
  const T = rows[0]!.positions.length;
  expectClose(got, ref.out, outputTol(T), `${label}: output`);
  expectClose(lse, ref.lse, LSE_TOL, `${label}: lse`);
  checkTight(c.headDim, queryHeads, rows, queries, ref.out);
  return { cache, seq, shadow, queries, ref, queryHeads };
}

describe('attention vs float64 reference', () => {
  for (const headDim of [8, 64, 128, 256]) {
    for (const ratio of [1, 4, 8]) {
      it(`decode, head_dim ${headDim}, GQA ratio ${ratio}, 45 rows in blocks of 16`, () => {
        const rng = testRng();
        const { cache } = runCase({ headDim, kvHeads: 2, ratio, blockSize: 16, keys: 'f16', values: 'f16', chunks: [45], tq: 1 },
          rng, `D=${headDim} r=${ratio}`);
        cache.dispose();
      });
    }
  }

  const formats: [PlainStorage, PlainStorage][] = [['f32', 'f32'], ['f16', 'f16'], ['bf16', 'bf16'], ['f32', 'bf16'], ['bf16', 'f16']];
  for (const [keys, values] of formats) {
    it(`storage keys ${keys} / values ${values}: decode and Tq = 5, 100 rows in 3 appends, blockSize 32`, () => {
      const rng = testRng();
      for (const tq of [1, 5]) {
        const { cache } = runCase({ headDim: 64, kvHeads: 2, ratio: 4, blockSize: 32, keys, values, chunks: [40, 1, 59], tq },
          rng, `${keys}/${values} Tq=${tq}`);
        cache.dispose();
      }
    });
  }

  it('prefill 37 rows then Tq = 37 equals full causal attention (head_dim 128, ratio 4)', () => {
    const rng = testRng();
    const headDim = 128;
    const { cache, seq, shadow, queries, queryHeads } = runCase(
      { headDim, kvHeads: 2, ratio: 4, blockSize: 16, keys: 'f16', values: 'f16', chunks: [37], tq: 37 }, rng, 'prefill 37');
    // worked example: query 0 sees only row 0, so every query head of group g returns row 0 of kv head g
    const out = seq.attention(1, queries);
    for (let qh = 0; qh < queryHeads; qh++) {
      const v0 = Array.from(shadow.rows(1)[Math.floor(qh / 4)]!.values).slice(0, headDim);
      expectClose(out.subarray(qh * headDim, (qh + 1) * headDim), v0, { abs: 1e-6 }, `query 0, head ${qh}`);
    }
    cache.dispose();
  });

  it('chunked prefill: 20 then 17 rows, each chunk attended with Tq = chunk, equals rows of the full causal result', () => {
    const rng = testRng();
    const headDim = 64;
    const kvHeads = 2;
    const queryHeads = 8;
    const shape = { layers: 1, kvHeads, headDim, keys: 'f32' as const, values: 'f16' as const };
    const cache = new KVCache({ ...shape, queryHeads, blockSize: 16, threads: 1 });
    const seq = cache.createSequence();
    const shadow = new Shadow(shape);
    const q = randn(rng, 37 * queryHeads * headDim);
    const outs: Float32Array[] = [];
    for (const [start, n] of [[0, 20], [20, 17]]) {
      const { keys, values } = randomRows(rng, shape, n!);
      seq.append(0, keys, values);
      shadow.append(0, keys, values);
      outs.push(seq.attention(0, q.subarray(start! * queryHeads * headDim, (start! + n!) * queryHeads * headDim)));
    }
    const full = attentionReference({ headDim, queryHeads, streams: shadow.rows(0), queries: q });
    const got = new Float32Array(37 * queryHeads * headDim);
    got.set(outs[0]!, 0);
    got.set(outs[1]!, outs[0]!.length);
    expectClose(got, full.out, outputTol(37), 'chunked prefill');
    // query 0 sees only row 0: its output is exactly row 0's value (a softmax over one row)
    expectClose(got.subarray(0, headDim), Array.from(shadow.rows(0)[0]!.values).slice(0, headDim), { abs: 1e-6 }, 'query 0 = value 0');
    cache.dispose();
  });

  it('explicit positions with gaps: the mask follows positions, not row indices', () => {
    const rng = testRng();
    const headDim = 64;
    const shape = { layers: 1, kvHeads: 2, headDim, keys: 'f16' as const, values: 'f16' as const };
    const cache = new KVCache({ ...shape, queryHeads: 4, blockSize: 8, threads: 1 });
    const seq = cache.createSequence();
    const shadow = new Shadow(shape);
    for (const pos of [positionsFrom(0, 10), positionsFrom(40, 3), positionsFrom(100, 12)]) {
      const { keys, values } = randomRows(rng, shape, pos.length);
      seq.append(0, keys, values, { positions: pos });
      shadow.append(0, keys, values, pos);
    }
    expect(seq.nextPosition(0)).toBe(112);
    const queries = randn(rng, 6 * 4 * headDim);
    const lse = poisoned(6 * 4);
    const got = seq.attention(0, queries, { lse });
    const ref = attentionReference({ headDim, queryHeads: 4, streams: shadow.rows(0), queries });
    expectClose(got, ref.out, outputTol(25), 'gapped positions');
    expectClose(lse, ref.lse, LSE_TOL, 'gapped positions lse');
    cache.dispose();
  });

  it('positions out of order or repeated: visibility follows positions only (or append rejects them)', () => {
    const rng = testRng();
    const headDim = 16;
    const shape = { layers: 1, kvHeads: 2, headDim, keys: 'f32' as const, values: 'f32' as const };
    const cache = new KVCache({ ...shape, queryHeads: 2, blockSize: 4, threads: 1 });
    const seq = cache.createSequence();
    const shadow = new Shadow(shape);
    // rows of a later block hold earlier positions, and the last two queries share position 6
    const pos = [8, 9, 10, 11, 0, 1, 2, 3, 12, 5, 6, 6];
    const { keys, values } = randomRows(rng, shape, pos.length);
    let accepted = true;
    try {
      seq.append(0, keys, values, { positions: pos });
    } catch (e) {
      accepted = false;
      expect((e as { code?: string }).code).toBe('INVALID_ARGUMENT');
      expect(seq.length(0, 0)).toBe(0);
    }
    if (accepted) {
      shadow.append(0, keys, values, pos);
      shadow.expectMatches(seq, 'unordered positions');
      const queries = randn(rng, 4 * 2 * headDim);
      const ref = attentionReference({ headDim, queryHeads: 2, streams: shadow.rows(0), queries });
      expectClose(seq.attention(0, queries), ref.out, outputTol(12), 'unordered positions');
    }
    cache.dispose();
  });

  it('edge block sizes: blockSize 1 and a block larger than the stream', () => {
    const rng = testRng();
    for (const blockSize of [1, 4096]) {
      for (const tq of [1, 7]) {
        const { cache } = runCase({ headDim: 8, kvHeads: 1, ratio: 2, blockSize, keys: 'f32', values: 'f32', chunks: [3, 4], tq },
          rng, `blockSize ${blockSize} Tq ${tq}`);
        cache.dispose();
      }
    }
  });

  it('without options allocates a fresh Float32Array; repeated calls agree; lse omitted is fine', () => {
    const rng = testRng();
    const { cache, seq, queries, ref } = runCase(
      { headDim: 64, kvHeads: 1, ratio: 4, blockSize: 16, keys: 'f16', values: 'f16', chunks: [30], tq: 2 }, rng, 'base');
    const a = seq.attention(1, queries);
    const b = seq.attention(1, queries);
    expect(a).toBeInstanceOf(Float32Array);
    expect(a).not.toBe(b);
    expect(a.length).toBe(queries.length);
    expectClose(a, ref.out, outputTol(30), 'no options');
    expectClose(b, a, { abs: 0 }, 'deterministic');
    cache.dispose();
  });
});
