// precision 'fast' (docs/fast-precision.md): int8 / int4 keys scored with integer dot
// products against the query quantized to int8 per group.
//
// 1. Exactness of the implementation: against a float64 reference that applies the documented
//    quantization of the query (the same f32 rounding, replicated here) to the rows as stored,
//    the kernel leaves only f32 arithmetic error: the tolerances of exact attention
//    (attention-tolerance.ts). A wrong group, nibble, bias or scale fails this by orders of
//    magnitude. Where int8 values are accumulated with byte weights (the AVX-512 VNNI kernel,
//    devices().cpu.fastKernels), each output element may move by the documented value term
//    V_e = Σ_blocks Σ_{r in block} (max_{r' in block} P_r' s_r'g / 510) · |q_re| (P the normalized
//    probabilities, s the row's group scale, q its stored integer) and no more.
// 2. The error model: against exact attention (the float64 reference on the exact query), every
//    logit moves by at most E = scale · Σ_g (sx_g / 508) · Σ_{e in g} |k_e - min_g| (min_g = 0 for
//    int8), so the log-sum-exp moves by at most E and each output element by at most
//    (exp(2E) - 1) · max |v|. The measured error must be within that, and the output must
//    differ from the exact kernel's (the fast path ran).
// 3. Identical results for 1, 2 and 3 threads; the cache default and the per-call option agree;
//    formats without integer keys are unchanged.
import { describe, expect, it } from 'vitest';
import { KVCache, KVCacheError, type Storage } from '../../lib/index';
import { LSE_TOL, outputTol } from '../foundation/attention-tolerance';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { caseInputs, caseName, makeCaseCache, type AttentionCase } from './attention-cases';
import { normalsFrom } from '../reference/random';
import { randn, testRng } from '../reference/random';

type Case = AttentionCase;

const shapes: Omit<Case, 'keys' | 'values'>[] = [
  { headDim: 128, groupSize: 32, blockSize: 32, T: 2100, tq: 1, kvHeads: 2, ratio: 4 },
  { headDim: 128, groupSize: 64, blockSize: 32, T: 300, tq: 3, kvHeads: 2, ratio: 4 },
  { headDim: 128, groupSize: 128, blockSize: 7, T: 300, tq: 1, kvHeads: 1, ratio: 5 },
  { headDim: 64, groupSize: 32, blockSize: 16, T: 517, tq: 5, kvHeads: 1, ratio: 7 },
  { headDim: 96, groupSize: 32, blockSize: 33, T: 401, tq: 2, kvHeads: 1, ratio: 8 },
  { headDim: 32, groupSize: 8, blockSize: 32, T: 250, tq: 2, kvHeads: 2, ratio: 3 },
  { headDim: 8, groupSize: 8, blockSize: 16, T: 200, tq: 4, kvHeads: 2, ratio: 4 },
];
const formats: [Storage, Storage][] = [['int8', 'int8'], ['int4', 'int4'], ['int8', 'f16'], ['int4', 'int8']];

/** Round half to even, as the kernel's rint in the default rounding mode. */
function rint(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The documented per-call query quantization, in the kernel's f32 arithmetic: two int8 terms,
 * x ~ sx * (xq + xr / 254) with sx = a / 127; returns the effective xq + xr / 254.
 */
function quantizeQuery(x: ArrayLike<number>, offset: number, D: number, G: number) {
  const xq = new Float64Array(D);
  const sx = new Float64Array(D / G);
  const xsum = new Float64Array(D / G);
  for (let g = 0; g < D / G; g++) {
    let a = 0;
    let sum = 0;
    for (let e = 0; e < G; e++) {
      const v = x[offset + g * G + e]!;
      a = Math.max(a, Math.abs(v));
      sum = Math.fround(sum + v);
    }
    const inv = a > 0 ? Math.fround(127 / a) : 0;
    for (let e = 0; e < G; e++) {
      const t = Math.fround(x[offset + g * G + e]! * inv);
      const q = Math.max(-127, Math.min(127, rint(t)));
      const r = Math.max(-127, Math.min(127, rint(Math.fround((t - q) * 254))));
      xq[g * G + e] = q + r / 254;
    }
    sx[g] = Math.fround(a / 127);
    xsum[g] = sum;
  }
  return { xq, sx, xsum };
}

interface Stream { keys: Float32Array; values: Float32Array; positions: Int32Array; beta: Float32Array }

/**
 * Float64 attention with the fast mode's logits: sum_e k_e * sx * xq_e, and for int4 keys the
 * minimum term with the exact query sum, min_g * sum_e (x_e - sx * xq_e) added back (the stored
 * group minimum is the smallest stored element: the quantized minimum encodes as 0).
 * Also returns the error bound E of every (token, query head).
 */
function fastReference(c: Case, streams: Stream[], queries: Float32Array) {
  const D = c.headDim;
  const G = c.groupSize;
  const QH = c.kvHeads * c.ratio;
  const scale = 1 / Math.sqrt(D);
  const out = new Float64Array(c.tq * QH * D);
  const lse = new Float64Array(c.tq * QH);
  const bound = new Float64Array(c.tq * QH);
  const valueBound = new Float64Array(c.tq * QH * D);
  for (let h = 0; h < c.kvHeads; h++) {
    const s = streams[h]!;
    const T = s.positions.length;
    const mins = new Float64Array(T * (D / G));
    for (let r = 0; r < T; r++) {
      for (let g = 0; g < D / G; g++) {
        let m = Infinity;
        for (let e = 0; e < G; e++) m = Math.min(m, s.keys[r * D + g * G + e]!);
        mins[r * (D / G) + g] = c.keys === 'int4' ? m : 0;
      }
    }
    for (let t = 0; t < c.tq; t++) {
      const qpos = s.positions[T - c.tq + t]!;
      for (let j = 0; j < c.ratio; j++) {
        const qh = h * c.ratio + j;
        const qo = (t * QH + qh) * D;
        const { xq, sx, xsum } = quantizeQuery(queries, qo, D, G);
        const logits = new Float64Array(T);
        let max = -Infinity;
        let worst = 0;
        for (let r = 0; r < T; r++) {
          if (s.positions[r]! > qpos) { logits[r] = -Infinity; continue; }
          let dot = 0;
          let e8 = 0;
          for (let g = 0; g < D / G; g++) {
            const mn = mins[r * (D / G) + g]!;
            let qsum = 0;
            let absK = 0;
            for (let e = 0; e < G; e++) {
              const k = s.keys[r * D + g * G + e]!;
              dot += k * sx[g]! * xq[g * G + e]!;
              qsum += sx[g]! * xq[g * G + e]!;
              absK += Math.abs(k - mn);
            }
            dot += mn * (xsum[g]! - qsum);
            e8 += (sx[g]! / 508) * absK;
          }
          logits[r] = dot * scale + s.beta[r]!;
          worst = Math.max(worst, e8 * scale);
          max = Math.max(max, logits[r]!);
        }
        let sum = 0;
        for (let r = 0; r < T; r++) if (logits[r] !== -Infinity) sum += Math.exp(logits[r]! - max);
        const prob = new Float64Array(T);
        for (let r = 0; r < T; r++) {
          if (logits[r] === -Infinity) continue;
          const p = Math.exp(logits[r]! - max) / sum;
          prob[r] = p;
          for (let e = 0; e < D; e++) out[qo + e] = out[qo + e]! + p * s.values[r * D + e]!;
        }
        if (c.values === 'int8') {
          // Byte weights: per block and group, |Δw| <= max w / 510 with w = P · s (int8 scale s = absmax / 127).
          for (let b0 = 0; b0 < T; b0 += c.blockSize) {
            const b1 = Math.min(T, b0 + c.blockSize);
            for (let g = 0; g < D / G; g++) {
              let wmax = 0;
              const scales: number[] = [];
              for (let r = b0; r < b1; r++) {
                let a = 0;
                for (let e = 0; e < G; e++) a = Math.max(a, Math.abs(s.values[r * D + g * G + e]!));
                scales.push(a / 127);
                wmax = Math.max(wmax, prob[r]! * (a / 127));
              }
              for (let r = b0; r < b1; r++) {
                const sc = scales[r - b0]!;
                if (sc === 0) continue;
                for (let e = 0; e < G; e++) valueBound[qo + g * G + e] = valueBound[qo + g * G + e]! + (wmax / 510) * Math.abs(s.values[r * D + g * G + e]!) / sc;
              }
            }
          }
        }
        lse[t * QH + qh] = max + Math.log(sum);
        bound[t * QH + qh] = worst;
      }
    }
  }
  return { out, lse, bound, valueBound };
}

/** Whether this case's int8 values take the integer path (fast_values.inl). */
function integerValues(c: Case): boolean {
  return KVCache.devices().cpu.fastKernels === 'avx512-vnni' && c.values === 'int8' && c.headDim % 64 === 0 &&
    [32, 64, 128].includes(c.groupSize);
}

const makeCache = makeCaseCache;

describe("precision 'fast' vs float64 references (quantized query; error model)", () => {
  for (const [keys, values] of formats) {
    for (const s of shapes) {
      const c: Case = { keys, values, ...s };
      const name = caseName(c);
      it(name, () => {
        const QH = c.kvHeads * c.ratio;
        const { keys: rowsIn, values: valuesIn, queries } = caseInputs(c, normalsFrom(testRng()));
        const outs: Float32Array[] = [];
        for (const threads of [1, 2, 3]) {
          const cache = makeCache(c, threads, 'fast');
          const seq = cache.createSequence();
          seq.append(0, rowsIn, valuesIn);
          const lse = new Float32Array(c.tq * QH);
          const out = seq.attention(0, queries, { lse });
          outs.push(out);
          if (threads === 1) {
            const streams = Array.from({ length: c.kvHeads }, (_, h) => seq.read(0, h) as Stream);
            const ref = fastReference(c, streams, queries);
            const byteWeights = integerValues(c);
            if (byteWeights) {
              // f32 error plus the value term; and the value term is what separates the two.
              let largest = 0;
              for (const x of ref.out) largest = Math.max(largest, Math.abs(x));
              for (let k = 0; k < out.length; k++) {
                expect(Math.abs(out[k]! - ref.out[k]!), `${name}: output ${k} vs the quantized-query reference`)
                  .toBeLessThanOrEqual(1.25 * ref.valueBound[k]! + 1e-5 * largest + 1e-6);
              }
            } else {
              expectClose(out, ref.out, outputTol(c.T), `${name}: output vs the quantized-query reference`);
            }
            expectClose(lse, ref.lse, LSE_TOL, `${name}: lse vs the quantized-query reference`);

            const exact = attentionReference({ headDim: c.headDim, queryHeads: QH, streams, queries });
            let maxV = 0;
            for (const st of streams) for (const v of st.values) maxV = Math.max(maxV, Math.abs(v));
            for (let i = 0; i < lse.length; i++) {
              const E = ref.bound[i]!;
              expect(Math.abs(lse[i]! - exact.lse[i]!), `${name}: lse ${i} within the bound`).toBeLessThanOrEqual(E + 2e-5);
              for (let e = 0; e < c.headDim; e++) {
                const k = i * c.headDim + e;
                const outBound = Math.expm1(2 * E) * maxV + 1e-5 + (byteWeights ? 1.25 * ref.valueBound[k]! : 0);
                expect(Math.abs(out[k]! - exact.out[k]!), `${name}: output ${k} within the bound`).toBeLessThanOrEqual(outBound);
              }
            }
            const exactOut = seq.attention(0, queries, { precision: 'exact' });
            expect(Buffer.from(exactOut.buffer).equals(Buffer.from(out.buffer)), `${name}: the fast path ran (differs from exact)`).toBe(false);
          }
          cache.dispose();
        }
        for (const o of outs.slice(1)) expect(Buffer.from(o.buffer).equals(Buffer.from(outs[0]!.buffer)), `${name}: thread count changes the output`).toBe(true);
      });
    }
  }
});

describe("precision 'fast': options", () => {
  const c: Case = { keys: 'int8', values: 'int4', headDim: 128, groupSize: 32, blockSize: 32, T: 300, tq: 1, kvHeads: 2, ratio: 4 };
  let rowsIn: Float32Array = new Float32Array(0);
  let valuesIn: Float32Array = new Float32Array(0);
  let queries: Float32Array = new Float32Array(0);
  const inputs = () => {
    const rng = testRng('options');
    rowsIn = randn(rng, c.T * c.kvHeads * c.headDim);
    valuesIn = randn(rng, c.T * c.kvHeads * c.headDim);
    queries = randn(rng, c.tq * c.kvHeads * c.ratio * c.headDim);
  };
  const run = (cache: KVCache, options: Record<string, unknown> = {}) => {
    const seq = cache.createSequence();
    seq.append(0, rowsIn, valuesIn);
    const out = seq.attention(0, queries, options);
    cache.dispose();
    return Buffer.from(out.buffer);
  };

  it('the per-call option and the cache default give the same results; exact overrides a fast cache', () => {
    inputs();
    const exact = run(makeCache(c, 1));
    const fastCache = run(makeCache(c, 1, 'fast'));
    expect(fastCache.equals(exact)).toBe(false);
    expect(run(makeCache(c, 1), { precision: 'fast' }).equals(fastCache)).toBe(true);
    expect(run(makeCache(c, 1, 'fast'), { precision: 'exact' }).equals(exact)).toBe(true);
    expect(makeCache(c, 1, 'fast').config.precision).toBe('fast');
  });

  it('formats without integer keys compute exactly', () => {
    inputs();
    for (const keys of ['f16', 'f32', 'bf16'] as Storage[]) {
      const k: Case = { ...c, keys, values: 'int8' };
      expect(run(makeCache(k, 1), { precision: 'fast' }).equals(run(makeCache(k, 1)))).toBe(true);
    }
  });

  it('rejects unknown precisions with INVALID_ARGUMENT', () => {
    inputs();
    expect(() => makeCache(c, 1, 'fastest' as 'fast')).toThrow(KVCacheError);
    const cache = makeCache(c, 1);
    const seq = cache.createSequence();
    seq.append(0, rowsIn, valuesIn);
    try {
      seq.attention(0, queries, { precision: 'quick' as 'fast' });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(KVCacheError);
      expect((err as KVCacheError).code).toBe('INVALID_ARGUMENT');
    }
    cache.dispose();
  });
});
