// Self-checks of the test references against worked examples computed by hand, so that a
// failure of a library test points at the library and not at the reference.
import { describe, expect, it } from 'vitest';
import { attentionReference, headRows, withoutRow } from './attention-reference';
import { expectBitExact, expectClose, maxAbsError, relError } from './compare';
import {
  bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, fromF16Bits, roundToBf16, roundToBf16Arith,
  roundToF16, roundToF16Arith, storedValues, toF16Bits,
} from './formats-reference';
import { arange, hashString, ones, randn, Rng, testRng } from './random';

describe('f16 reference', () => {
  it('encodes worked examples', () => {
    expect(f32ToF16Bits(0)).toBe(0x0000);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(0.5)).toBe(0x3800);
    expect(f32ToF16Bits(65504)).toBe(0x7bff); // largest finite
    expect(f32ToF16Bits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16Bits(3 * 2 ** -24)).toBe(0x0003);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
  });

  it('rounds to nearest, ties to even', () => {
    // 1 + 2^-11 is half an ulp above 1 (ulp of 1 is 2^-10): tie, 1 is even -> 1.
    expect(roundToF16(1 + 2 ** -11)).toBe(1);
    // 1 + 3·2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even) -> 1 + 2^-9.
    expect(roundToF16(1 + 3 * 2 ** -11)).toBe(1 + 2 ** -9);
    // just above the tie rounds up.
    expect(roundToF16(1 + 2 ** -11 + 2 ** -20)).toBe(1 + 2 ** -10);
    // 65519 rounds down to 65504; 65520 is the tie between 65504 (odd) and 65536 (even) -> Inf.
    expect(roundToF16(65519)).toBe(65504);
    expect(roundToF16(65520)).toBe(Infinity);
    expect(roundToF16(-65520)).toBe(-Infinity);
    expect(roundToF16(1e6)).toBe(Infinity);
  });

  it('handles subnormals and underflow', () => {
    expect(roundToF16(2 ** -25)).toBe(0); // tie between 0 (even) and 2^-24 -> 0
    expect(roundToF16(2 ** -25 + 2 ** -35)).toBe(2 ** -24);
    expect(roundToF16(3 * 2 ** -25)).toBe(2 * 2 ** -24); // tie between 1·2^-24 and 2·2^-24 (even)
    expect(roundToF16(5 * 2 ** -25)).toBe(2 * 2 ** -24); // tie between 2 (even) and 3
    expect(roundToF16(2 ** -30)).toBe(0);
    expect(Object.is(roundToF16(-(2 ** -30)), -0)).toBe(true);
    // The largest subnormal rounds up into the smallest normal through the carry.
    expect(roundToF16(2 ** -14 - 2 ** -26)).toBe(2 ** -14);
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24);
  });

  it('decodes every binary16 value back to itself', () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = f16BitsToF32(h);
      if (Number.isNaN(v)) continue;
      if (f32ToF16Bits(v) !== h) expect.fail(`bits 0x${h.toString(16)} -> ${v} -> 0x${f32ToF16Bits(v).toString(16)}`);
    }
  });

  it('agrees with an independent arithmetic rounding on random float32 values', () => {
    const rng = testRng();
    for (let i = 0; i < 20000; i++) {
      // random sign, exponent across the whole f16 range and beyond, random 24-bit mantissa
      const x = Math.fround((rng.uniform() < 0.5 ? -1 : 1) * (1 + rng.uniform()) * 2 ** rng.int(-27, 17));
      const a = roundToF16(x);
      const b = roundToF16Arith(x);
      if (!Object.is(a, b)) expect.fail(`x = ${x}: bits ${a}, arithmetic ${b}`);
    }
  });
});

describe('bf16 reference', () => {
  it('encodes worked examples', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(-2)).toBe(0xc000);
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
    // ulp of 1 is 2^-7: 1 + 2^-8 ties to 1 (even); 1 + 3·2^-8 ties to 1 + 2^-6 (even).
    expect(roundToBf16(1 + 2 ** -8)).toBe(1);
    expect(roundToBf16(1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6);
    expect(roundToBf16(1 + 2 ** -8 + 2 ** -20)).toBe(1 + 2 ** -7);
    // the largest float32 rounds up to Inf; the largest bf16 is (2 - 2^-7)·2^127.
    expect(roundToBf16(3.4028234663852886e38)).toBe(Infinity);
    expect(bf16BitsToF32(0x7f7f)).toBe((2 - 2 ** -7) * 2 ** 127);
    // float32 subnormals stay subnormal: 2^-149 + 2^-140 keeps only the bits bf16 holds.
    expect(roundToBf16(2 ** -133)).toBe(2 ** -133);
    expect(roundToBf16(2 ** -134)).toBe(0); // tie, 0 is even
  });

  it('agrees with an independent arithmetic rounding on random float32 values', () => {
    const rng = testRng();
    for (let i = 0; i < 20000; i++) {
      const x = Math.fround((rng.uniform() < 0.5 ? -1 : 1) * (1 + rng.uniform()) * 2 ** rng.int(-140, 127));
      const a = roundToBf16(x);
      const b = roundToBf16Arith(x);
      if (!Object.is(a, b)) expect.fail(`x = ${x}: bits ${a}, arithmetic ${b}`);
    }
  });

  it('predicts stored values from f32 and f16 input', () => {
    const x = new Float32Array([1 + 2 ** -11, 1 + 2 ** -9 + 2 ** -12, 65520, -3.14159]);
    expectBitExact(storedValues('f32', x), x, 'f32 storage');
    // 65520 rounds to Inf in binary16; storage saturates it at 65504 instead.
    expectBitExact(storedValues('f16', x), new Float32Array([1, 1 + 2 ** -9, 65504, roundToF16(-3.14159)]), 'f16');
    expectBitExact(storedValues('bf16', new Float32Array([3.4028234e38, -3.4028234e38])),
      new Float32Array([(2 - 2 ** -7) * 2 ** 127, -(2 - 2 ** -7) * 2 ** 127]), 'bf16 saturates');
    const h = toF16Bits(x);
    expectBitExact(storedValues('f32', h), fromF16Bits(h), 'f16 bits into f32 storage');
    // 1 + 2^-9 (an f16 value) into bf16: 2^-9 is a quarter of bf16's ulp 2^-7 -> 1.
    expect(storedValues('bf16', h)[1]).toBe(1);
  });
});

describe('attention reference', () => {
  const D = 4;
  it('one row returns that row\'s value, lse = its logit', () => {
    const r = attentionReference({
      headDim: D, queryHeads: 1,
      streams: [{ keys: [1, 2, 3, 4], values: [5, -6, 7, 8], positions: [0], beta: [0.25] }],
      queries: [1, 1, 1, 1],
    });
    expect(Array.from(r.out)).toEqual([5, -6, 7, 8]);
    expect(r.lse[0]).toBeCloseTo(10 / 2 + 0.25, 14); // q·k = 10, sqrt(4) = 2
  });

  it('two rows with equal logits average; lse = logit + log 2', () => {
    const r = attentionReference({
      headDim: D, queryHeads: 1,
      streams: [{ keys: [1, 0, 0, 0, 0, 1, 0, 0], values: [2, 0, 0, 4, 0, 2, 6, 0], positions: [0, 1] }],
      queries: [3, 3, 0, 0],
    });
    expect(Array.from(r.out)).toEqual([1, 1, 3, 2]);
    expect(r.lse[0]).toBeCloseTo(1.5 + Math.log(2), 14);
  });

  it('beta shifts the weights: a row with beta = log 3 counts three times', () => {
    const r = attentionReference({
      headDim: D, queryHeads: 1,
      streams: [{ keys: ones(8), values: [4, 0, 0, 0, 0, 4, 0, 0], positions: [0, 1], beta: [Math.log(3), 0] }],
      queries: [0, 0, 0, 0],
    });
    expectClose(r.out, [3, 1, 0, 0], { abs: 1e-14 }, 'beta weighting');
    expect(r.lse[0]).toBeCloseTo(Math.log(4), 14);
  });

  it('masks by position: query i sees rows with position <= its own', () => {
    // 3 rows, Tq = 3; all logits equal (q = 0), so query i averages the values of rows 0..i.
    const values = [3, 0, 0, 0, 0, 3, 0, 0, 0, 0, 3, 0];
    const r = attentionReference({
      headDim: D, queryHeads: 1,
      streams: [{ keys: arange(12), values, positions: [10, 11, 12] }],
      queries: new Float32Array(12),
    });
    expectClose(r.out, [3, 0, 0, 0, 1.5, 1.5, 0, 0, 1, 1, 1, 0], { abs: 1e-14 }, 'causal');
    expectClose(r.lse, [0, Math.log(2), Math.log(3)], { abs: 1e-14 }, 'causal lse');
    // Tq = 1 sits at the last row and sees everything.
    const last = attentionReference({
      headDim: D, queryHeads: 1, streams: [{ keys: arange(12), values, positions: [10, 11, 12] }],
      queries: new Float32Array(4),
    });
    expectClose(last.out, [1, 1, 1, 0], { abs: 1e-14 }, 'decode');
  });

  it('maps query heads to kv heads in groups and lets each kv head have its own length', () => {
    // kv head 0: one row of value 1s; kv head 1: two rows, values 2s and 4s, equal logits -> 3s.
    const streams = [
      { keys: ones(D), values: ones(D), positions: [5] },
      { keys: ones(2 * D), values: [2, 2, 2, 2, 4, 4, 4, 4], positions: [4, 5] },
    ];
    const r = attentionReference({ headDim: D, queryHeads: 4, streams, queries: randn(new Rng(1), 4 * D) });
    expectClose(r.out, [1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3], { abs: 1e-14 }, 'gqa groups');
    expect(() => attentionReference({ headDim: D, queryHeads: 3, streams, queries: new Float32Array(3 * D) }))
      .toThrow(/multiple/);
  });

  it('matches a direct softmax on random data; a dropped row is visible far above 2e-6', () => {
    const rng = testRng();
    const T = 50;
    const keys = randn(rng, T * D);
    const values = randn(rng, T * D);
    const positions = Array.from({ length: T }, (_, i) => i);
    const q = randn(rng, D);
    const r = attentionReference({ headDim: D, queryHeads: 1, streams: [{ keys, values, positions }], queries: q });
    const logits = Array.from({ length: T }, (_, t) => (q[0]! * keys[t * D]! + q[1]! * keys[t * D + 1]! +
      q[2]! * keys[t * D + 2]! + q[3]! * keys[t * D + 3]!) / 2);
    const z = logits.reduce((a, l) => a + Math.exp(l), 0);
    const direct = [0, 1, 2, 3].map((d) => logits.reduce((a, l, t) => a + Math.exp(l) * values[t * D + d]!, 0) / z);
    expectClose(r.out, direct, { rel: 1e-12 }, 'direct softmax');
    expect(r.lse[0]).toBeCloseTo(Math.log(z), 12);
    const dropped = attentionReference({
      headDim: D, queryHeads: 1, streams: [withoutRow({ keys, values, positions }, 17, D)], queries: q,
      queryPositions: [[T - 1]],
    });
    expect(relError(dropped.out, r.out)).toBeGreaterThan(1e-4);
  });
});

describe('helpers', () => {
  it('headRows picks one kv head out of token-major data', () => {
    // [T=2, kvHeads=3, D=2] with element = index
    expect(Array.from(headRows(arange(12), 3, 2, 1))).toEqual([2, 3, 8, 9]);
  });

  it('compare helpers report the worst index', () => {
    expect(maxAbsError([1, 2, 3], [1, 2.5, 3])).toEqual({ value: 0.5, index: 1 });
    expect(relError([3, 4], [3, 4])).toBe(0);
    expect(() => expectClose([1, 2, 3], [1, 2.5, 3], { abs: 0.1 }, 'demo')).toThrow(/worst index 1/);
    expect(() => expectClose([1, NaN], [1, 2], { rel: 1 }, 'nan')).toThrow(/NaN/);
    expect(() => expectBitExact(new Float32Array([0]), new Float32Array([-0]), 'zero')).toThrow(/index 0/);
  });

  it('seeds differ per test name and inputs are never all zeros', () => {
    expect(hashString('a')).not.toBe(hashString('b'));
    const x = randn(testRng(), 64);
    expect(x.some((v) => v !== 0)).toBe(true);
    expect(Array.from(randn(new Rng(7), 4))).toEqual(Array.from(randn(new Rng(7), 4)));
  });
});
