// Long streams (> 4096 rows) so the kernel splits one stream across threads: threads 1 and 2
// must both match the float64 reference. A single kv head with one query head leaves the kernel
// no other parallelism than splitting the rows.
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { attentionReference } from '../reference/attention-reference';
import { expectClose } from '../reference/compare';
import { randn, testRng } from '../reference/random';
import { LSE_TOL, checkTight, outputTol } from './attention-tolerance';
import { Shadow, poisoned, randomRows } from './helpers';

describe('attention over long streams, threads 1 and 2', () => {
  const cases = [
    { kvHeads: 1, queryHeads: 1, headDim: 128, T: 4100, tq: 1, blockSize: 32 },
    { kvHeads: 2, queryHeads: 8, headDim: 64, T: 4500, tq: 3, blockSize: 48 },
  ];
  for (const c of cases) {
    it(`kvHeads ${c.kvHeads}, queryHeads ${c.queryHeads}, head_dim ${c.headDim}, ${c.T} rows, Tq ${c.tq}`, () => {
      const rng = testRng();
      const shape = { layers: 1, kvHeads: c.kvHeads, headDim: c.headDim, keys: 'f16' as const, values: 'f16' as const };
      const { keys, values } = randomRows(rng, shape, c.T);
      const shadow = new Shadow(shape);
      shadow.append(0, keys, values);
      const queries = randn(rng, c.tq * c.queryHeads * c.headDim);
      const ref = attentionReference({ headDim: c.headDim, queryHeads: c.queryHeads, streams: shadow.rows(0), queries });
      checkTight(c.headDim, c.queryHeads, shadow.rows(0), queries, ref.out);
      const outs: Float32Array[] = [];
      for (const threads of [1, 2]) {
        const cache = new KVCache({ ...shape, queryHeads: c.queryHeads, blockSize: c.blockSize, threads });
        expect(cache.config.threads).toBe(threads);
        const seq = cache.createSequence();
        seq.append(0, keys, values);
        const out = poisoned(queries.length);
        const lse = poisoned(c.tq * c.queryHeads);
        seq.attention(0, queries, { out, lse });
        expectClose(out, ref.out, outputTol(c.T), `threads ${threads}: output`);
        expectClose(lse, ref.lse, LSE_TOL, `threads ${threads}: lse`);
        outs.push(out);
        cache.dispose();
      }
      // one thread and two may sum in a different order, but both sit within the bound of each other
      expectClose(outs[1]!, outs[0]!, outputTol(c.T), 'threads 2 vs 1');
    });
  }
});
