// One attention test case (formats, shape, GQA ratio) and what every test over it needs: its
// name, its cache, and fresh random inputs with an offset so int4 minimums matter. No
// test-runner imports: the prefill kernel's per-SIMD-level child process uses these too.
import { KVCache, type Storage } from '../../lib/index';

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

/** n N(0, scale²) samples (no test-runner import here: child processes use these cases too). */
export type Normals = (n: number, scale?: number) => Float32Array;

/** Keys (scaled by 2, offset by 0.5), values and queries for one case, fresh from `normals`. */
export function caseInputs(c: AttentionCase, normals: Normals): { keys: Float32Array; values: Float32Array; queries: Float32Array } {
  const keys = normals(c.T * c.kvHeads * c.headDim, 2);
  for (let i = 0; i < keys.length; i++) keys[i]! += 0.5; // a common offset: int4 minimums matter
  const values = normals(c.T * c.kvHeads * c.headDim);
  const queries = normals(c.tq * c.kvHeads * c.ratio * c.headDim);
  return { keys, values, queries };
}
