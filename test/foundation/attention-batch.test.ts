// KVCache.attentionBatch: one decode step over several sequences of different lengths equals
// per-sequence attention and the float64 reference, with `out` and `lse`.
import { describe, expect, it } from 'vitest';
import { KVCache, type Sequence } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { LSE_TOL, outputTol } from './attention-tolerance';
import { Shadow, poisoned, randomRows } from './helpers';

describe('attentionBatch', () => {
  it('sequences of 1, 17, 50 and 130 rows (one a fork) equal per-sequence attention and the reference', () => {
    const rng = testRng();
    const headDim = 64;
    const kvHeads = 2;
    const queryHeads = 8;
    const layers = 2;
    const shape = { layers, kvHeads, headDim, keys: 'f16' as const, values: 'bf16' as const };
    const cache = new KVCache({ ...shape, queryHeads, blockSize: 16, threads: 2 });
    const seqs: Sequence[] = [];
    const shadows: Shadow[] = [];
    for (const T of [1, 17, 50]) {
      const seq = cache.createSequence();
      const shadow = new Shadow(shape);
      for (let l = 0; l < layers; l++) {
        const { keys, values } = randomRows(rng, shape, T + l); // layers differ in length too
        seq.append(l, keys, values);
        shadow.append(l, keys, values);
      }
      seqs.push(seq);
      shadows.push(shadow);
    }
    // a fork of the 50-row sequence, grown to 130 rows: shares its first blocks
    const fork = seqs[2]!.fork();
    const forkShadow = shadows[2]!.clone();
    for (let l = 0; l < layers; l++) {
      const { keys, values } = randomRows(rng, shape, 80);
      fork.append(l, keys, values);
      forkShadow.append(l, keys, values);
    }
    seqs.push(fork);
    shadows.push(forkShadow);

    const stride = queryHeads * headDim;
    for (const layer of [0, 1]) {
      const queries = randn(rng, seqs.length * stride);
      const out = poisoned(queries.length);
      const lse = poisoned(seqs.length * queryHeads);
      const got = cache.attentionBatch(layer, seqs, queries, { out, lse });
      expect(got).toBe(out);
      seqs.forEach((seq, i) => {
        const q = queries.slice(i * stride, (i + 1) * stride);
        const single = seq.attention(layer, q);
        const ref = attentionReference({ headDim, queryHeads, streams: shadows[i]!.rows(layer), queries: q });
        const T = shadows[i]!.length(layer, 0);
        const part = got.subarray(i * stride, (i + 1) * stride);
        expectClose(part, ref.out, outputTol(T), `layer ${layer} sequence ${i} (${T} rows) vs reference`);
        expectClose(part, single, outputTol(T), `layer ${layer} sequence ${i} vs attention()`);
        expectClose(lse.subarray(i * queryHeads, (i + 1) * queryHeads), ref.lse, LSE_TOL, `layer ${layer} sequence ${i} lse`);
      });
    }
    // order of the batch does not matter
    const queries = randn(rng, seqs.length * stride);
    const a = cache.attentionBatch(1, seqs, queries);
    const rev = [...seqs].reverse();
    const revQ = new Float32Array(queries.length);
    rev.forEach((_, i) => revQ.set(queries.subarray((seqs.length - 1 - i) * stride, (seqs.length - i) * stride), i * stride));
    const b = cache.attentionBatch(1, rev, revQ);
    seqs.forEach((_, i) => {
      const j = seqs.length - 1 - i;
      expectClose(b.subarray(j * stride, (j + 1) * stride), a.subarray(i * stride, (i + 1) * stride), { rel: 1e-6 }, `reversed ${i}`);
    });
    cache.dispose();
  });
});
