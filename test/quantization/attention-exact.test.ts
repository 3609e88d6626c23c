// Attention over int8 / int4 rows against the float64 reference on the rows as stored
// (Sequence.read: the dequantized values), so that only the kernel's float32 arithmetic
// remains: the same tolerances as plain storage (attention-tolerance.ts). Covers the group
// sizes with fused decode kernels (32, 64, 128) and others (decoded through scratch), head
// dims with and without compile-time kernels, partial blocks, Tq > 1, GQA ratios, mixed
// formats; and results identical for 1, 2 and 3 threads.
import { describe, expect, it } from 'vitest';
import type { Storage } from '../../lib/index';
import { LSE_TOL, outputTol } from '../foundation/attention-tolerance';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { caseInputs, caseName, makeCaseCache, type AttentionCase } from './attention-cases';
import { normalsFrom } from '../reference/random';
import { testRng } from '../reference/random';

type Case = AttentionCase;

const shapes: Omit<Case, 'keys' | 'values'>[] = [
  { headDim: 128, groupSize: 32, blockSize: 32, T: 2100, tq: 1, kvHeads: 2, ratio: 4 },
  { headDim: 128, groupSize: 64, blockSize: 32, T: 300, tq: 3, kvHeads: 2, ratio: 4 },
  { headDim: 64, groupSize: 32, blockSize: 16, T: 517, tq: 5, kvHeads: 1, ratio: 7 },
  { headDim: 128, groupSize: 128, blockSize: 7, T: 300, tq: 1, kvHeads: 1, ratio: 1 },
  { headDim: 96, groupSize: 32, blockSize: 33, T: 401, tq: 2, kvHeads: 1, ratio: 8 },
  { headDim: 96, groupSize: 48, blockSize: 33, T: 201, tq: 2, kvHeads: 1, ratio: 2 },
  { headDim: 32, groupSize: 2, blockSize: 32, T: 100, tq: 2, kvHeads: 1, ratio: 3 },
];
const formats: [Storage, Storage][] = [['int8', 'int8'], ['int4', 'int4'], ['int8', 'f16'], ['f16', 'int4'], ['int4', 'int8']];

describe('quantized attention vs float64 reference on the stored rows', () => {
  for (const [keys, values] of formats) {
    for (const s of shapes) {
      const c: Case = { keys, values, ...s };
      const name = caseName(c);
      it(name, () => {
        const queryHeads = c.kvHeads * c.ratio;
        const { keys: rowsIn, values: valuesIn, queries } = caseInputs(c, normalsFrom(testRng()));
        const outs: Float32Array[] = [];
        for (const threads of [1, 2, 3]) {
          const cache = makeCaseCache(c, threads);
          const seq = cache.createSequence();
          seq.append(0, rowsIn, valuesIn);
          const lse = new Float32Array(c.tq * queryHeads);
          const out = seq.attention(0, queries, { lse });
          outs.push(out);
          if (threads === 1) {
            const streams = Array.from({ length: c.kvHeads }, (_, h) => seq.read(0, h));
            const ref = attentionReference({ headDim: c.headDim, queryHeads, streams, queries });
            expectClose(out, ref.out, outputTol(c.T), `${name}: output`);
            expectClose(lse, ref.lse, LSE_TOL, `${name}: lse`);
          }
          cache.dispose();
        }
        for (const o of outs.slice(1)) expect(Buffer.from(o.buffer).equals(Buffer.from(outs[0]!.buffer)), `${name}: thread count changes the output`).toBe(true);
      });
    }
  }
});
