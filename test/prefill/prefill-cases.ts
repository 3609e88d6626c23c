// Cases of the prefill attention kernel (many query vectors per call: Tq x the GQA group at
// least 32, block sizes a multiple of 16) checked against the float64 reference on the rows as
// stored (Sequence.read), shared by the in-process test and its per-SIMD-level child.
// Each case: fresh random rows, causal query positions that cross block (tile) edges, a
// partial last block, and optionally beta from a compaction and the attention mass.
import { Compactor, KVCache, type Storage } from '../../lib/index';
// No vitest imports here: the child process runs outside the test runner.
import { type AttentionCase, caseName as attentionCaseName, type Normals } from '../quantization/attention-cases';
import { type StreamRows, attentionReference } from '../reference/attention-reference';
import { maxAbsError as worstError, relError } from '../reference/errors';

const maxAbsError = (a: ArrayLike<number>, b: ArrayLike<number>): number => worstError(a, b).value;

export type { Normals };

export interface PrefillCase extends AttentionCase {
  /** compact (OMP, ratio 0.5) the first T rows, then append tq more: beta != 0, gaps in positions */
  beta?: boolean;
  /** also check the attention mass (accumulateScores) */
  mass?: boolean;
}

export function caseName(c: PrefillCase): string {
  return attentionCaseName(c) + `${c.beta ? ', beta' : ''}${c.mass ? ', mass' : ''}`;
}

export const PREFILL_CASES: PrefillCase[] = [
  { keys: 'f32', values: 'f32', headDim: 128, groupSize: 32, blockSize: 32, T: 530, tq: 40, kvHeads: 2, ratio: 4, mass: true },
  { keys: 'f16', values: 'f16', headDim: 128, groupSize: 32, blockSize: 16, T: 301, tq: 64, kvHeads: 1, ratio: 1 },
  { keys: 'bf16', values: 'bf16', headDim: 64, groupSize: 32, blockSize: 48, T: 415, tq: 37, kvHeads: 2, ratio: 3 },
  { keys: 'int8', values: 'int8', headDim: 128, groupSize: 32, blockSize: 32, T: 700, tq: 100, kvHeads: 1, ratio: 4, mass: true },
  { keys: 'int4', values: 'int4', headDim: 128, groupSize: 64, blockSize: 64, T: 333, tq: 70, kvHeads: 1, ratio: 2 },
  { keys: 'int8', values: 'f16', headDim: 96, groupSize: 16, blockSize: 32, T: 257, tq: 33, kvHeads: 2, ratio: 2 },
  { keys: 'int4', values: 'int8', headDim: 64, groupSize: 16, blockSize: 16, T: 190, tq: 50, kvHeads: 1, ratio: 8 },
  { keys: 'f16', values: 'int4', headDim: 128, groupSize: 128, blockSize: 32, T: 600, tq: 48, kvHeads: 2, ratio: 4, beta: true, mass: true },
  { keys: 'f32', values: 'f32', headDim: 64, groupSize: 32, blockSize: 32, T: 400, tq: 64, kvHeads: 1, ratio: 1, beta: true },
];

export interface CaseResult {
  name: string;
  outRel: number;
  /** rows in each stream (the output tolerance grows with it) */
  T: number;
  lseAbs: number;
  massAbs: number; // 0 when not checked
  massTol: number;
  /** outputs of threads 1 and 2 bit-identical */
  threadsEqual: boolean;
}

/** Float64 attention mass: per row, sum over query vectors of exp(logit - lse). */
function referenceMass(s: StreamRows, queries: Float32Array, kvh: number, queryHeads: number, group: number, D: number,
  lse: Float64Array, tq: number): Float64Array {
  const T = s.positions.length;
  const mass = new Float64Array(T);
  const scale = 1 / Math.sqrt(D);
  for (let i = 0; i < tq; i++) {
    const qpos = s.positions[T - tq + i]!;
    for (let g = 0; g < group; g++) {
      const qh = kvh * group + g;
      const off = (i * queryHeads + qh) * D;
      const l = lse[i * queryHeads + qh]!;
      for (let t = 0; t < T; t++) {
        if (s.positions[t]! > qpos) continue;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += queries[off + d]! * s.keys[t * D + d]!;
        mass[t]! += Math.exp(dot * scale + (s.beta ? s.beta[t]! : 0) - l);
      }
    }
  }
  return mass;
}

export async function runPrefillCase(c: PrefillCase, randn: Normals): Promise<CaseResult> {
  const queryHeads = c.kvHeads * c.ratio;
  const keys = randn(c.T * c.kvHeads * c.headDim, 2);
  for (let i = 0; i < keys.length; i++) keys[i]! += 0.3; // a common offset: int4 minimums matter
  const values = randn(c.T * c.kvHeads * c.headDim);
  const more = c.beta ? { keys: randn(c.tq * c.kvHeads * c.headDim, 2), values: randn(c.tq * c.kvHeads * c.headDim) } : null;
  const queries = randn(c.tq * queryHeads * c.headDim);
  const outs: Float32Array[] = [];
  let result: CaseResult | null = null;
  for (const threads of [1, 2]) {
    const cache = new KVCache({ layers: 1, kvHeads: c.kvHeads, headDim: c.headDim, queryHeads, keys: c.keys, values: c.values,
      groupSize: c.groupSize, blockSize: c.blockSize, threads });
    const seq = cache.createSequence();
    seq.append(0, keys, values);
    if (more) {
      await new Compactor({ method: 'omp', ratio: 0.5, protect: { sinks: 2, recent: 8 } }).compact(seq);
      seq.append(0, more.keys, more.values);
    }
    const before = Array.from({ length: c.kvHeads }, (_, h) => seq.scores(0, h));
    const lse = new Float32Array(c.tq * queryHeads);
    const out = seq.attention(0, queries, { lse, accumulateScores: c.mass ?? false });
    outs.push(out);
    if (threads === 1) {
      const streams = Array.from({ length: c.kvHeads }, (_, h) => seq.read(0, h));
      if (c.beta && !streams.some((s) => s.beta.some((b) => b !== 0))) throw new Error(`${caseName(c)}: compaction left beta 0`);
      const ref = attentionReference({ headDim: c.headDim, queryHeads, streams, queries });
      let massAbs = 0;
      if (c.mass) {
        const group = c.ratio;
        for (let h = 0; h < c.kvHeads; h++) {
          const want = referenceMass(streams[h]!, queries, h, queryHeads, group, c.headDim, ref.lse, c.tq);
          const after = seq.scores(0, h);
          const got = after.map((x, r) => x - (before[h]![r] ?? 0));
          massAbs = Math.max(massAbs, maxAbsError(got, want));
        }
      }
      const T = streams[0]!.positions.length;
      result = { name: caseName(c), outRel: relError(out, ref.out), T, lseAbs: maxAbsError(lse, ref.lse),
        massAbs, massTol: 2e-6 * c.tq * c.ratio, threadsEqual: false };
    }
    cache.dispose();
  }
  result!.threadsEqual = Buffer.from(outs[0]!.buffer).equals(Buffer.from(outs[1]!.buffer));
  return result!;
}

