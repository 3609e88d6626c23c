// Compactor through the public API (docs/compaction-results.md).
//   npx tsx bench/compactor.bench.ts [--quick] [--runs 5] [--json out.json]
// 1. One stream, T = 4096, n = 2048 recorded queries, t = 410, D = 128, 1 thread: median
//    time per phase and total, both methods (each run compacts a fresh fork).
// 2. A Llama-3-8B-shaped context: 32 layers × 8 kv heads × 128, 16K tokens (256 streams),
//    int8 keys and values, chunkSize 4096, 128 reference query tokens per layer (32 query
//    heads → 512 vectors per stream), ratio 0.1, 2 threads: total time. --quick: 4 layers.
import * as os from 'node:os';
import { positiveInt } from '../examples/shared/cli';
import { Compactor, KVCache, type CompactionReport } from '../lib/index';
import { llmStreams } from '../test/compactor/llm-stream';
import { checkedArgs, markdownTable, parseBenchArgs, progress, writeJson } from './support/bench-utils';

const args = parseBenchArgs({
  command: 'npx tsx bench/compactor.bench.ts',
  summary: 'Compactor through the public API: one 4096-row stream per phase and method, then a Llama-3-8B-shaped 16K-token context.',
  options: { runs: { type: 'string', value: 'N', description: 'timed runs per case (default 5; --quick 3)' } },
});
const runs = checkedArgs(() => positiveInt('runs', args.values.runs, args.quick ? 3 : 5));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const out: Record<string, unknown> = { machine: { cpus: os.cpus()[0]?.model, cores: os.cpus().length, loadavg: os.loadavg() } };

async function oneStream() {
  const T = 4096, D = 128, n = 2048;
  const s = llmStreams({ tokens: T, kvHeads: 1, headDim: D, queries: n, heldOut: 1 }, 7);
  const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: 'f32', values: 'f32', threads: 1, queryReservoir: n });
  const seq = cache.createSequence();
  seq.append(0, s.keys, s.values);
  for (let i = 0; i < n; i++) seq.attention(0, s.queries.subarray(i * D, (i + 1) * D), { recordQueries: true });
  const rows: (string | number)[][] = [];
  for (const method of ['highest-attention', 'omp'] as const) {
    const compactor = new Compactor({ method, targetTokens: 410, protect: { sinks: 4, recent: 32 }, threads: 1 });
    const reports: CompactionReport[] = [];
    for (let r = 0; r < runs + 1; r++) {
      const f = seq.fork();
      const rep = await compactor.compact(f);
      if (r > 0) reports.push(rep); // first run is warm-up
      f.free();
    }
    const m = (k: keyof CompactionReport['milliseconds']) => median(reports.map((x) => x.milliseconds[k]));
    const row = [method, m('read'), m('scores'), m('select'), m('nnls'), m('values'), m('diagnostics'), m('apply'), m('total')].map((v) =>
      typeof v === 'number' ? Number(v.toFixed(1)) : v,
    );
    rows.push(row);
    out[`oneStream.${method}`] = Object.fromEntries(['read', 'scores', 'select', 'nnls', 'values', 'diagnostics', 'apply', 'total'].map((k, i) => [k, row[i + 1]]));
  }
  cache.dispose();
  console.log(`\n## One stream: T = 4096, n = 2048 recorded queries, t = 410, D = 128, 1 thread (median of ${runs}, ms)\n`);
  console.log(markdownTable(['method', 'read', 'scores', 'select', 'nnls', 'values', 'diagnostics', 'apply', 'total (wall)'], rows));
}

async function llama() {
  const layers = args.quick ? 4 : 32, kvHeads = 8, queryHeads = 32, D = 128, T = 16384, nq = 128;
  const s = llmStreams({ tokens: T, kvHeads, headDim: D, queries: nq * 4, heldOut: 1 }, 3);
  // [nq, queryHeads, D]: the 4 query heads of a GQA group take 4 consecutive generated queries of their kv head.
  const q = new Float32Array(nq * queryHeads * D);
  for (let i = 0; i < nq; i++) {
    for (let qh = 0; qh < queryHeads; qh++) {
      const h = Math.floor(qh / 4), src = i * 4 + (qh % 4);
      q.set(s.queries.subarray((src * kvHeads + h) * D, (src * kvHeads + h + 1) * D), (i * queryHeads + qh) * D);
    }
  }
  const cache = new KVCache({ layers, kvHeads, queryHeads, headDim: D, keys: 'int8', values: 'int8', threads: 2 });
  const seq = cache.createSequence();
  for (let l = 0; l < layers; l++) seq.append(l, s.keys, s.values);
  const before = cache.stats();
  const compactor = new Compactor({ method: 'highest-attention', ratio: 0.1, chunkSize: 4096, protect: { sinks: 4, recent: 64 }, threads: 2 });
  const t0 = performance.now();
  const rep = await compactor.compact(seq, {
    queries: Array.from({ length: layers }, () => q),
    onProgress: (f) => progress(`compacting ${layers * kvHeads} streams: ${(f * 100).toFixed(0)}% after ${((performance.now() - t0) / 1e3).toFixed(1)} s`),
  });
  progress('');
  const wall = performance.now() - t0;
  const after = cache.stats();
  cache.dispose();
  const res = {
    streams: rep.streams.length, rowsBefore: rep.rowsBefore, rowsAfter: rep.rowsAfter,
    bytesBefore: before.bytesUsed, bytesAfter: after.bytesUsed, bytesFreed: rep.bytesFreed,
    totalSeconds: wall / 1e3, meanOutputError: rep.meanOutputError, maxOutputError: rep.maxOutputError,
    phaseSecondsSummedOverStreams: Object.fromEntries(Object.entries(rep.milliseconds).map(([k, v]) => [k, v / 1e3])),
  };
  out['llama3-8b-16k'] = res;
  console.log(`\n## Llama-3-8B shape: ${layers} layers × 8 kv heads × 128, T = 16384, int8, chunkSize 4096, ratio 0.1, 2 threads\n`);
  console.log(markdownTable(['streams', 'rows before → after', 'pool bytes before → after', 'total (wall, s)', 'mean / max reference error'], [[
    res.streams, `${res.rowsBefore} → ${res.rowsAfter}`, `${(res.bytesBefore / 2 ** 20).toFixed(0)} MiB → ${(res.bytesAfter / 2 ** 20).toFixed(0)} MiB`,
    res.totalSeconds.toFixed(1), `${res.meanOutputError.toFixed(3)} / ${res.maxOutputError.toFixed(3)}`,
  ]]));
}

async function main() {
  await oneStream();
  await llama();
  writeJson(args.json, out);
}
main();
