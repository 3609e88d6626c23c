// One quantized-attention test case (formats, shape, GQA ratio) and what every test over it
// needs: its name, its cache, and fresh random inputs with an offset so int4 minimums matter.
import { KVCache, type Storage } from '../../lib/index';
import { randn, Rng } from '../reference/random';

export interface AttentionCase {
  keys: Storage;
  values: Storage;
  headDim: number;
  groupSize: number;
  blockSize: number;
  T: number;
  tq: number;
  kvHeads: number;
  ratio: number;
}

export function caseName(c: AttentionCase): string {
  return `${c.keys}/${c.values}, D ${c.headDim}, group ${c.groupSize}, blocks of ${c.blockSize}, T ${c.T}, Tq ${c.tq}, ratio ${c.ratio}`;
}

export function makeCaseCache(c: AttentionCase, threads: number, precision?: 'exact' | 'fast'): KVCache {
  return new KVCache({ layers: 1, kvHeads: c.kvHeads, headDim: c.headDim, queryHeads: c.kvHeads * c.ratio, keys: c.keys,
    values: c.values, groupSize: c.groupSize, blockSize: c.blockSize, threads, ...(precision ? { precision } : {}) });
}

/** Keys (scaled by 2, offset by 0.5), values and queries for one case, fresh from `rng`. */
export function caseInputs(c: AttentionCase, rng: Rng): { keys: Float32Array; values: Float32Array; queries: Float32Array } {
  const keys = randn(rng, c.T * c.kvHeads * c.headDim, 2);
  for (let i = 0; i < keys.length; i++) keys[i]! += 0.5; // a common offset: int4 minimums matter
  const values = randn(rng, c.T * c.kvHeads * c.headDim);
  const queries = randn(rng, c.tq * c.kvHeads * c.ratio * c.headDim);
  return { keys, values, queries };
}
