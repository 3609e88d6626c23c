// Part 2 of `npm run demo`: the same memory budget reached by eviction and by compaction.
// One Llama-3-8B-shaped layer (f16) holds a synthetic context (test/compactor/llm-stream.ts:
// drifting keys with outlier channels, an attention sink, queries that look at a recent row
// and at one of 48 salient rows anywhere, as retrieval does). Every method starts from the
// same sequence, with the same reference queries recorded by attention (as an engine's decode
// or self-study steps would), and shrinks every stream to the same number of rows. Judged on
// held-out queries: the attention output over the shrunk stream against the full one.
import { Compactor, EvictionPolicy, KVCache, type Sequence } from '../../lib/index';
import { llmStreams } from '../../test/compactor/llm-stream';
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
  apply(seq: Sequence): Promise<unknown>;
}

const REFERENCE_QUERIES = 256;
const HELD_OUT = 64;
const SINKS = 4;
const RECENT = 64;

/** Every method keeps exactly `rows` rows per stream. */
function methods(rows: number): Method[] {
  const evict = (policy: EvictionPolicy) => async (seq: Sequence) => seq.evict(policy, { keep: rows });
  const compact = (method: 'highest-attention' | 'omp') => async (seq: Sequence) =>
    new Compactor({ method, targetTokens: rows, protect: { sinks: SINKS, recent: RECENT } }).compact(seq);
  return [
    { name: 'full f16 cache', kind: 'none', apply: async () => undefined },
    { name: 'evict: sliding window', kind: 'eviction', apply: evict(EvictionPolicy.slidingWindow({ window: rows })) },
    { name: 'evict: StreamingLLM', kind: 'eviction', apply: evict(EvictionPolicy.streamingLLM({ sinks: SINKS, window: RECENT })) },
    { name: 'evict: H2O', kind: 'eviction', apply: evict(EvictionPolicy.h2o({ sinks: SINKS, recent: RECENT })) },
    { name: 'evict: SnapKV', kind: 'eviction', apply: evict(EvictionPolicy.snapKV({ sinks: SINKS, recent: RECENT })) },
    { name: 'compact: Attention Matching, highest-attention', kind: 'compaction', apply: compact('highest-attention') },
    { name: 'compact: Attention Matching, OMP', kind: 'compaction', apply: compact('omp') },
  ];
}

/** [n × group, kvHeads, D] generated queries → [n, queryHeads, D]: the query heads of a GQA group take consecutive ones. */
function gqa(src: Float32Array, n: number): Float32Array {
  const { kvHeads: H, headDim: D, queryHeads: QH } = SHAPE;
  const group = QH / H;
  const q = new Float32Array(n * QH * D);
  for (let i = 0; i < n; i++) {
    for (let qh = 0; qh < QH; qh++) {
      const h = Math.floor(qh / group);
      const from = ((i * group + (qh % group)) * H + h) * D;
      q.set(src.subarray(from, from + D), (i * QH + qh) * D);
    }
  }
  return q;
}

export async function runShrink(a: ShrinkArgs, progress: Progress): Promise<string> {
  progress.update('shrinking: generating the context…', true);
  const group = SHAPE.queryHeads / SHAPE.kvHeads;
  const streams = llmStreams({ tokens: a.tokens, kvHeads: SHAPE.kvHeads, headDim: SHAPE.headDim, queries: REFERENCE_QUERIES * group, heldOut: HELD_OUT * group }, 7);
  const reference = gqa(streams.queries, REFERENCE_QUERIES);
  const heldOut = gqa(streams.heldOut, HELD_OUT);
  const qElems = SHAPE.queryHeads * SHAPE.headDim;
  // The reservoir holds every reference query vector (the default keeps a sample of 512 per stream).
  const cache = new KVCache({
    layers: 1, ...SHAPE, keys: 'f16', values: 'f16', queryReservoir: REFERENCE_QUERIES * group, ...(a.threads ? { threads: a.threads } : {}),
  });

  const fill = (): Sequence => {
    const seq = cache.createSequence();
    seq.append(0, streams.keys, streams.values);
    // The reference queries go through attention, recording them and the attention mass per
    // row: what an engine's decode steps (or self-study continuations) leave behind. One call
    // of many query tokens, which sit at the last positions (close enough to decode's).
    seq.attention(0, reference, { recordQueries: true, accumulateScores: true });
    return seq;
  };
  const attend = (seq: Sequence): Float32Array => {
    // One query token per call: each sees the whole context, as a decode step would.
    const out = new Float32Array(heldOut.length);
    for (let i = 0; i < HELD_OUT; i++) seq.attention(0, heldOut.subarray(i * qElems, (i + 1) * qElems), { out: out.subarray(i * qElems, (i + 1) * qElems) });
    return out;
  };

  const list = methods(Math.ceil(a.keep * a.tokens));
  const rows: string[][] = [];
  let full: Float32Array | undefined;
  let bestEviction = Infinity;
  let bestCompaction = Infinity;
  for (const [i, m] of list.entries()) {
    progress.update(`shrinking [${i + 1}/${list.length}] ${m.name}`, true);
    const seq = fill();
    const before = cache.stats().bytesUsed;
    const t0 = performance.now();
    await m.apply(seq);
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
      m.kind === 'none' ? '–' : formatBytes(before - after),
      m.kind === 'none' ? '0 (reference)' : err.toFixed(3),
      m.kind === 'none' ? '–' : ms.toFixed(0),
    ]);
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
