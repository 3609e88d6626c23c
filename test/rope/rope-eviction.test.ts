// SnapKV and TOVA on caches with rope (keys and queries stored before RoPE) against a float64
// reference written from the definition: a row's score is the softmax attention that the
// recorded queries, rotated at their tokens' positions, give the row's key rotated at its
// stored position (positions: 'rank': every row at its rank, a query at its token's rank),
// with beta; SnapKV averages the newest window of query tokens and max-pools, TOVA takes the
// newest token. Device cpu and device cuda (the GPU, or the SIMT emulator of the test addon)
// score alike; plain, f16 and low-rank (keys lifted before rotation) streams; the keep set of
// evict() is the reference's top rows.
import { describe, expect, it } from 'vitest';

import { EvictionPolicy, KVCache, type KVCacheOptions, type Sequence } from '../../lib/index';
import { expectClose, relError } from '../reference/compare';
import { selectRows, snapKVScores, tovaScores } from '../eviction/reference';
import { randn, testRng } from '../reference/random';
import { ropeF64, type RopeSpec } from '../reference/rope-reference';
import { cudaTarget } from '../support/cuda-target';
import { ropeProbe, recordProbe } from './probe';

const target = cudaTarget();

const D = 64, KVH = 2, QH = 4, G = QH / KVH, WINDOW = 6, POOL = 3;

interface Recorded {
  queries: Float32Array; // [tokens][QH][D], pre-RoPE
  positions: Int32Array; // stored position of each query token
}

/** Float64 scores of one stream: rows as read (pre-RoPE, lifted), queries as recorded. */
function reference(seq: Sequence, h: number, rope: RopeSpec, rec: Recorded, policy: 'snapKV' | 'tova', byRank: boolean): Float64Array {
  const s = seq.read(0, h);
  const n = s.positions.length;
  const sorted = Array.from(s.positions).sort((a, b) => a - b);
  const rankOf = (p: number) => sorted.filter((x) => x < p).length;
  const keys = new Float64Array(n * D);
  for (let i = 0; i < n; i++) keys.set(ropeF64(s.keys, i * D, D, rope, byRank ? i : s.positions[i]!), i * D);
  const recent: Float64Array[] = [];
  for (let t = 0; t < rec.positions.length; t++) {
    const p = byRank ? rankOf(rec.positions[t]!) : rec.positions[t]!;
    for (let j = 0; j < G; j++) recent.push(ropeF64(rec.queries, (t * QH + h * G + j) * D, D, rope, p));
  }
  const stream = { keys, beta: s.beta, n };
  return policy === 'snapKV' ? snapKVScores(stream, D, recent, WINDOW, G, POOL) : tovaScores(stream, D, recent, G);
}

const cases: Array<{ name: string; options: Partial<KVCacheOptions>; rope: RopeSpec }> = [
  { name: 'f32 keys, interleaved', options: { keys: 'f32', values: 'f32' }, rope: { theta: 10000, dims: D, style: 'interleaved' } },
  { name: 'f16 keys, half over 48 dims', options: { keys: 'f16', values: 'f16' }, rope: { theta: 10000, dims: 48, style: 'half' } },
  {
    name: 'lowRank keys 16 values 32, int8', rope: { theta: 10000, dims: D, style: 'half' },
    options: { keys: 'int8', values: 'int8', groupSize: 8, lowRank: { keys: 16, values: 32, calibrationRows: 24 } },
  },
];

describe(`snapKV and tova on caches with rope: float64 reference, device cpu and cuda (${target.kind})`, () => {
  for (const c of cases) {
    it(`${c.name}: stored and rank positions`, () => {
      const rng = testRng();
      const options: KVCacheOptions = {
        layers: 1, kvHeads: KVH, headDim: D, queryHeads: QH, blockSize: 16, recentQueries: 64, threads: 1, ...c.options, rope: c.rope,
      };
      using cpu = new KVCache({ ...options, device: 'cpu' });
      using gpu = new KVCache({ ...options, device: 'cuda' });
      const T = 150;
      const data = ropeProbe(rng, { kvHeads: KVH, queryHeads: QH, D }, T, 8, { dir: 1.5, noise: 0.5 });
      // an eviction first, so that ranks and stored positions differ by more than the gaps
      const between = (seq: Sequence) => seq.evict(EvictionPolicy.keyNorm({ sinks: 2, recent: 8 }), { ratio: 0.7 });
      const seqs = [cpu, gpu].map((cache) => recordProbe(cache.createSequence(), data, { truncate: false, between }));
      const rec: Recorded = { queries: data.probe, positions: data.positions.subarray(T) };
      for (const byRank of [false, true]) {
        const opt = byRank ? { positions: 'rank' as const } : {};
        for (const [name, policy] of [
          ['snapKV', EvictionPolicy.snapKV({ window: WINDOW, pool: POOL, sinks: 2, ...opt })],
          ['tova', EvictionPolicy.tova({ sinks: 2, recent: 4, ...opt })],
        ] as const) {
          const label = `${name}, ${byRank ? 'rank' : 'stored'} positions`;
          for (let h = 0; h < KVH; h++) {
            const want = reference(seqs[0]!, h, c.rope, rec, name, byRank);
            const [a, b] = seqs.map((s) => policy.scores(s, 0, h)) as [Float32Array, Float32Array];
            expect(Math.max(...want) / (1 / want.length), `${label} head ${h}: attention far from uniform`).toBeGreaterThan(1.5);
            expectClose(a, want, { rel: 2e-5 }, `${label} head ${h}: cpu vs f64`);
            expectClose(b, want, { rel: Math.max(2e-5, target.scoresRel) }, `${label} head ${h}: cuda vs f64`);
            expect(relError(b, a), `${label} head ${h}: cuda vs cpu`).toBeLessThan(Math.max(2e-6, target.scoresRel));
            // the rotation matters: unrotated scores (and the other position mode) are far off
            const other = reference(seqs[0]!, h, c.rope, rec, name, !byRank);
            expect(relError(a, other), `${label} head ${h}: differs from the other position mode`).toBeGreaterThan(1e-2);
          }
          // evict() keeps the protected rows and the reference's best rows
          const keep = 60;
          const forks = seqs.map((s) => s.fork());
          const want = Array.from({ length: KVH }, (_, h) => {
            const rows = selectRows(reference(seqs[0]!, h, c.rope, rec, name, byRank), keep, policy.sinks, policy.recent);
            const at = seqs[0]!.read(0, h).positions;
            return rows.map((r) => at[r]!);
          });
          for (const [i, f] of forks.entries()) {
            f.evict(policy, { keep });
            for (let h = 0; h < KVH; h++) {
              const kept = Array.from(f.read(0, h).positions);
              if (i === 0 || target.rules === 'exact') {
                expect(kept, `${label} head ${h}: kept rows`).toEqual(want[h]);
              } else {
                // a GPU's scores may differ by its summation order: near-ties can swap
                const same = kept.filter((p) => want[h]!.includes(p)).length;
                expect(same, `${label} head ${h}: kept rows (gpu)`).toBeGreaterThanOrEqual(keep - 3);
              }
            }
            f.free();
          }
        }
      }
    });
  }

  it('a cache with rope without recorded queries: snapKV says so (INVALID_ARGUMENT), nothing changes', () => {
    using cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 16, queryHeads: 1, rope: { theta: 10000 }, device: 'cpu' });
    const seq = cache.createSequence();
    const rng = testRng();
    seq.append(0, randn(rng, 20 * 16), randn(rng, 20 * 16));
    expect(() => seq.evict(EvictionPolicy.snapKV(), { keep: 10 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(seq.length(0, 0)).toBe(20);
    expect(() => EvictionPolicy.tova({ positions: 'ranks' as 'rank' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
