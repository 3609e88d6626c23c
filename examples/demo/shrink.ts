// Part 2 of `npm run demo`: the same memory budget reached by eviction and by compaction.
// One Llama-3-8B-shaped layer (f16) holds a synthetic context; every method starts from the
// same sequence, with the same reference queries recorded by attention (as an engine's decode
// or self-study steps would), and shrinks every stream to the same number of rows. Judged on
// held-out queries: the attention output over the shrunk stream against the full one.
import { Compactor, EvictionPolicy, KVCache, type Sequence } from '../../lib/index';
import { syntheticKV, syntheticQueries, type SyntheticStreams } from '../../bench/support/synthetic-streams';
import type { Progress } from '../shared/progress';
import { relativeError, SHAPE } from './formats';
import { formatBytes, table } from './output';

export interface ShrinkArgs {
  tokens: number;
  /** fraction of each stream's rows kept */
  keep: number;
  threads: number | undefined;
}

interface Method {
  name: string;
  kind: 'eviction' | 'compaction' | 'none';
  apply(seq: Sequence, rows: number): Promise<{ bytesFreed: number }>;
}

const REFERENCE_QUERIES = 64;
const HELD_OUT = 32;
const SINKS = 4;
const RECENT = 32;

function methods(keep: number): Method[] {
  const evict = (policy: EvictionPolicy) => async (seq: Sequence) => seq.evict(policy, { ratio: keep });
  const compact = (method: 'highest-attention' | 'omp') => async (seq: Sequence) =>
    new Compactor({ method, ratio: keep, protect: { sinks: SINKS, recent: RECENT } }).compact(seq);
  return [
    { name: 'full f16 cache', kind: 'none', apply: async () => ({ bytesFreed: 0 }) },
    { name: 'evict: sliding window', kind: 'eviction', apply: (s, rows) => evict(EvictionPolicy.slidingWindow({ window: Math.round(keep * rows) }))(s) },
    { name: 'evict: StreamingLLM', kind: 'eviction', apply: evict(EvictionPolicy.streamingLLM({ sinks: SINKS, window: RECENT })) },
    { name: 'evict: H2O', kind: 'eviction', apply: evict(EvictionPolicy.h2o({ sinks: SINKS, recent: RECENT })) },
    { name: 'evict: SnapKV', kind: 'eviction', apply: evict(EvictionPolicy.snapKV({ sinks: SINKS, recent: RECENT })) },
    { name: 'compact: Attention Matching, highest-attention', kind: 'compaction', apply: compact('highest-attention') },
    { name: 'compact: Attention Matching, OMP', kind: 'compaction', apply: compact('omp') },
  ];
}

/** Queries of the last context position, each with its own noise: decode steps' stand-ins. */
function decodeQueries(streams: SyntheticStreams, n: number, seed: number): Float32Array {
  const qElems = SHAPE.queryHeads * SHAPE.headDim;
  const out = new Float32Array(n * qElems);
  for (let i = 0; i < n; i++) out.set(syntheticQueries(streams, 1, seed + i), i * qElems);
  return out;
}

export async function runShrink(a: ShrinkArgs, progress: Progress): Promise<string> {
  progress.update('shrinking: generating the context…', true);
  const streams = syntheticKV({ tokens: a.tokens, ...SHAPE }, 777);
  const reference = decodeQueries(streams, REFERENCE_QUERIES, 1000);
  const heldOut = decodeQueries(streams, HELD_OUT, 5000);
  const qElems = SHAPE.queryHeads * SHAPE.headDim;
  const cache = new KVCache({ layers: 1, ...SHAPE, keys: 'f16', values: 'f16', ...(a.threads ? { threads: a.threads } : {}) });

  const fill = (): Sequence => {
    const seq = cache.createSequence();
    seq.append(0, streams.keys, streams.values);
    // The reference queries go through attention once, recording them and the attention mass
    // per row: what an engine's decode steps (or self-study continuations) leave behind.
    for (let i = 0; i < REFERENCE_QUERIES; i++) {
      seq.attention(0, reference.subarray(i * qElems, (i + 1) * qElems), { recordQueries: true, accumulateScores: true });
    }
    return seq;
  };
  const attend = (seq: Sequence): Float32Array => {
    const out = new Float32Array(heldOut.length);
    for (let i = 0; i < HELD_OUT; i++) seq.attention(0, heldOut.subarray(i * qElems, (i + 1) * qElems), { out: out.subarray(i * qElems, (i + 1) * qElems) });
    return out;
  };

  const list = methods(a.keep);
  const rows: string[][] = [];
  let full: Float32Array | undefined;
  let bestEviction = Infinity;
  let bestCompaction = Infinity;
  for (const [i, m] of list.entries()) {
    progress.update(`shrinking [${i + 1}/${list.length}] ${m.name}`, true);
    const seq = fill();
    const before = cache.stats().bytesUsed;
    const t0 = performance.now();
    const report = await m.apply(seq, a.tokens);
    const ms = performance.now() - t0;
    const after = cache.stats().bytesUsed;
    const out = attend(seq);
    full ??= out;
    const err = relativeError(out, full, qElems);
    if (m.kind === 'eviction') bestEviction = Math.min(bestEviction, err);
    if (m.kind === 'compaction') bestCompaction = Math.min(bestCompaction, err);
    const lengths = seq.lengths(0);
    rows.push([
      m.name,
      `${Math.min(...lengths)}${Math.max(...lengths) !== Math.min(...lengths) ? `–${Math.max(...lengths)}` : ''}`,
      formatBytes(after),
      m.kind === 'none' ? '–' : formatBytes(report.bytesFreed),
      m.kind === 'none' ? '0 (reference)' : err.toFixed(3),
      m.kind === 'none' ? '–' : ms.toFixed(0),
    ]);
    if (before - after !== report.bytesFreed) throw new Error(`${m.name}: stats() and the report disagree on the bytes freed`);
    seq.free();
  }
  cache.dispose();

  const lines = [
    `2. Shrinking the cache to ${(100 * a.keep).toFixed(0)}% of its rows: eviction and compaction at the same budget`,
    `   (one f16 layer, ${a.tokens} tokens; ${REFERENCE_QUERIES} reference queries recorded by attention, ${HELD_OUT} held-out queries judge)`,
    '',
    table(['method', 'rows per stream', 'KV memory', 'freed', 'attention error (held-out)', 'ms'], rows),
    '',
    `attention error: ‖out − out_full‖ / ‖out_full‖ per held-out query, mean. At the same memory, compaction's error is ` +
      `${bestCompaction.toFixed(3)} against ${bestEviction.toFixed(3)} for the best eviction policy ` +
      `(${(bestEviction / bestCompaction).toFixed(1)}× lower): it refits the kept rows' bias and values to the reference queries.`,
  ];
  return lines.join('\n');
}
