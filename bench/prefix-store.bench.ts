// PrefixStore benchmarks (README "Prefix store", BENCHMARKS.md "Prefix store").
//   npx tsx bench/prefix-store.bench.ts [--quick] [--runs 7] [--redis redis://127.0.0.1:6390] [--part P] [--backend B] [--connections N] [--json out.json]
// 1. Time to first token on stories260K: prefill a long document + a question from scratch,
//    against load of the stored document (plain and compacted, each backend) + prefill of
//    the question only.
// 2. match on a 32K-token prompt (128 chunks of 256): a full hit, a prompt that leaves the
//    stored one halfway, and a miss; median ms and lookups/s per backend.
// 3. put / load of a Llama-3-8B-shaped sequence (32 layers × 8 kv heads × 128, int8 keys and
//    values, 16K tokens; --quick: 4 layers) per backend, GB/s of export bytes, beside a memory
//    copy of the same bytes measured in the same run (the floor any load must pay once).
// 4. match with the store down: nothing listening, and a paused Redis server.
// --part ttft|match|down|throughput runs one part.
// Redis: --redis URL or KVCOMPACT_REDIS_URL (a local redis-server, or its unix socket path);
// skipped with a note otherwise. The Redis load is also timed stage by stage, with the CPU
// time of this process and of redis-server per load (the server's config is the caller's:
// BENCHMARKS.md records it).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KVCache, PrefixStore, type Sequence } from '../lib/index';
import { Redis } from 'ioredis';
import { RedisBackend } from '../lib/prefix-store/redis-backend';
import { native } from '../lib/native/binding';
import { cacheOptions, compact, encode, forward, loadStoryModel, prefill } from '../examples/store/story-model';
import { EVAL_TEXT_PATH } from '../examples/llama2c/paths';
import { positiveInt } from '../examples/shared/cli';
import { checkedArgs, markdownTable, parseBenchArgs, randomFloats, writeJson } from './support/bench-utils';

const args = parseBenchArgs({
  command: 'npx tsx bench/prefix-store.bench.ts',
  summary: 'PrefixStore: time to first token, matching, load and store throughput per backend.',
  options: {
    runs: { type: 'string', value: 'N', description: 'timed runs (default 7; --quick 3)' },
    redis: { type: 'string', value: 'URL', description: 'a local redis-server (default $KVCOMPACT_REDIS_URL; skipped without)' },
    part: { type: 'string', choices: ['ttft', 'match', 'down', 'throughput'], description: 'one part only (default all)' },
    backend: { type: 'string', choices: ['memory', 'directory', 'redis'], description: 'one backend only (default all)' },
    connections: { type: 'string', value: 'N', description: 'connections a Redis load reads over (default 2)' },
    join: { type: 'boolean', description: 'Redis stages: join the entries into export bytes and importSequence them (the path without a cache) instead of importing each entry as it arrives' },
  },
});
const runs = checkedArgs(() => positiveInt('runs', args.values.runs, args.quick ? 3 : 7));
const redisUrl = args.values.redis ?? process.env['KVCOMPACT_REDIS_URL'];
const connections = checkedArgs(() => positiveInt('connections', args.values.connections, 2));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const out: Record<string, unknown> = { machine: { cpus: os.cpus()[0]?.model, cores: os.cpus().length, loadavg: os.loadavg() } };
const fmt = (x: number, d = 2) => Number(x.toFixed(d));

type Named = [string, () => PrefixStore];
function stores(label: string, extra: { chunkTokens?: number; model?: string } = {}): Named[] {
  const options = { ...extra, onError: (e: Error) => console.error(`store error: ${e.message}`) };
  const list: Named[] = [
    ['memory', () => PrefixStore.memory({ maxBytes: 8 * 2 ** 30, ...options })],
    ['directory', () => PrefixStore.directory(fs.mkdtempSync(path.join(os.tmpdir(), `kvc-bench-${label}-`)), options)],
  ];
  if (redisUrl) list.push(['redis', () => PrefixStore.redis({ url: redisUrl, keyPrefix: `kvc-bench:${label}:${process.pid}:`, ttlSeconds: 600, loadConnections: connections, ...options })]);
  return args.values.backend ? list.filter(([name]) => name === args.values.backend) : list;
}

async function timeAsync(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function firstToken() {
  const m = loadStoryModel();
  const ids = encode(m, fs.readFileSync(EVAL_TEXT_PATH, 'utf8').slice(0, 8000), m.checkpoint.config.seqLen);
  const doc = ids.slice(0, ids.length - 16);
  const cache = new KVCache(cacheOptions(m, { keys: 'int8', values: 'int4', groupSize: 8, rotate: true, threads: 1 }));
  const rows: (string | number)[][] = [];
  const scratchTimes: number[] = [];
  for (let r = 0; r < runs + 1; r++) {
    let seq: Sequence | undefined;
    const t = await timeAsync(async () => {
      seq = prefill(m, cache, ids);
    });
    seq!.free();
    if (r > 0) scratchTimes.push(t);
  }
  const scratch = median(scratchTimes);
  rows.push(['no store: prefill document + question', '-', fmt(scratch), '1.00']);
  out['ttft.scratchMs'] = scratch;
  const plainSeq = prefill(m, cache, doc);
  const compactSeq = prefill(m, cache, doc);
  await compact(compactSeq, 0.25);
  for (const [name, open] of stores('ttft', { chunkTokens: 64, model: 'stories260K' })) {
    for (const [kind, seq] of [['plain', plainSeq], ['compacted', compactSeq]] as const) {
      const store = open();
      await store.put(doc, seq);
      const ts: number[] = [];
      for (let r = 0; r < runs + 1; r++) {
        let loadedSeq: Sequence | undefined;
        const t = await timeAsync(async () => {
          const loaded = await store.load(ids, cache);
          if (!loaded || loaded.kind !== kind) throw new Error(`${name}: expected a ${kind} hit`);
          loadedSeq = loaded.sequence;
          forward(m, loadedSeq, ids, loaded.length);
        });
        loadedSeq!.free();
        if (r > 0) ts.push(t);
      }
      const t = median(ts);
      out[`ttft.${name}.${kind}Ms`] = t;
      rows.push([`${name}: load ${kind} document + prefill question`, kind, fmt(t), fmt(scratch / t)]);
      await store.close();
    }
  }
  cache.dispose();
  console.log(`\n## Time to first token, stories260K: ${doc.length}-token document + 16-token question (median of ${runs}, ms)\n`);
  console.log(markdownTable(['path', 'entry', 'ms', 'speed-up'], rows));
}

async function matchLatency() {
  const tokens = 32768;
  // Lookups cost the same whatever the rows weigh: a one-layer, one-head cache keeps the stored bytes small.
  const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, keys: 'f16', values: 'f16', threads: 1 });
  const seq = cache.createSequence();
  seq.append(0, randomFloats(tokens * 8, 1), randomFloats(tokens * 8, 2));
  const ids = Array.from({ length: tokens }, (_, i) => (i * 7919) % 32000);
  const diverged = [...ids];
  diverged[tokens / 2 + 3] = 31999;
  const missing = ids.map((t) => (t + 1) % 32000);
  const rows: (string | number)[][] = [];
  // Floors measured now: one Redis round trip (PING) and, for the directory, a stat of 128
  // missing files: what one lookup of a 32K prompt cannot go below on this machine, as loaded as it is.
  if (redisUrl) {
    const client = new Redis(redisUrl);
    for (let w = 0; w < 50; w++) await client.ping();
    const ts: number[] = [];
    for (let r = 0; r < 201; r++) ts.push(await timeAsync(async () => void (await client.ping())));
    client.disconnect();
    out['match.redisPingMs'] = median(ts);
    rows.push(['(floor) redis PING round trip', `${fmt(median(ts), 3)} ms`, '', '']);
  }
  const missingDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvc-bench-stat-'));
  const statMs = median(Array.from({ length: 101 }, () => {
    const t0 = performance.now();
    for (let i = 0; i < 128; i++) fs.statSync(path.join(missingDir, `c${i}`), { throwIfNoEntry: false });
    return performance.now() - t0;
  }));
  out['match.stat128Ms'] = statMs;
  rows.push(['(floor) 128 stat() calls of missing files', `${fmt(statMs, 3)} ms`, '', '']);
  for (const [name, open] of stores('match')) {
    const store = open();
    await store.put(ids, seq);
    const row: (string | number)[] = [name];
    for (const [label, prompt, want] of [['hit', ids, tokens], ['half', diverged, tokens / 2], ['miss', missing, 0]] as const) {
      const prepared = Uint32Array.from(prompt);
      for (let w = 0; w < 20; w++) await store.match(prepared, cache);
      const ts: number[] = [];
      const c0 = process.cpuUsage();
      for (let r = 0; r < Math.max(runs, 201); r++) {
        let got = -1;
        ts.push(await timeAsync(async () => {
          got = (await store.match(prepared, cache)).length;
        }));
        if (got !== want) throw new Error(`${name} ${label}: matched ${got}, expected ${want}`);
      }
      // CPU time of this process per match (mean): the work itself, without the waits.
      const c = process.cpuUsage(c0);
      const cpuMs = (c.user + c.system) / 1000 / ts.length;
      const t = median(ts);
      // The fastest tenth as well: on a machine shared with other work, the median also
      // measures how long the process waits to be scheduled again after each reply.
      const p10 = [...ts].sort((a, b) => a - b)[Math.floor(ts.length / 10)]!;
      out[`match.${name}.${label}Ms`] = { median: t, p10, cpuMs };
      row.push(`${fmt(t, 3)} ms (${Math.round(1000 / t)}/s; p10 ${fmt(p10, 3)}; cpu ${fmt(cpuMs, 3)})`);
    }
    rows.push(row);
    await store.close();
  }
  cache.dispose();
  out['match.loadavg'] = os.loadavg();
  console.log(`\n## match on a ${tokens}-token prompt, chunks of 256 tokens (median; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')})\n`);
  console.log(markdownTable(['backend', 'hit (32768)', 'leaves at 16384', 'miss'], rows));
}

async function throughput() {
  const layers = args.quick ? 4 : 32, kvHeads = 8, headDim = 128, tokens = 16384;
  const cache = new KVCache({ layers, kvHeads, headDim, queryHeads: 32, keys: 'int8', values: 'int8', threads: 2 });
  const seq = cache.createSequence();
  const k = randomFloats(tokens * kvHeads * headDim, 3);
  const v = randomFloats(tokens * kvHeads * headDim, 4);
  for (let l = 0; l < layers; l++) seq.append(l, k, v);
  const ids = Array.from({ length: tokens }, (_, i) => (i * 104729) % 128000);
  const exportBytes = seq.export().length;
  // Floor measured now: one memory copy of the export bytes (a load copies at least once).
  const src = Buffer.alloc(exportBytes, 1);
  const dst = Buffer.alloc(exportBytes);
  const copyMs = median(Array.from({ length: 5 }, () => {
    const t0 = performance.now();
    src.copy(dst);
    return performance.now() - t0;
  }));
  const importMs = median(Array.from({ length: 3 }, () => {
    const bytes = seq.export();
    const t0 = performance.now();
    const s = cache.importSequence(bytes);
    const t = performance.now() - t0;
    s.free();
    return t;
  }));
  const gbps = (ms: number) => exportBytes / ms / 1e6;
  out['throughput.exportBytes'] = exportBytes;
  out['throughput.copyGBps'] = gbps(copyMs);
  out['throughput.importSequenceGBps'] = gbps(importMs);
  const rows: (string | number)[][] = [
    ['(floor) memory copy of the bytes', '-', fmt(gbps(copyMs)), '-'],
    ['(floor) KVCache.importSequence of the bytes', '-', fmt(gbps(importMs)), '-'],
  ];
  out['throughput.crc32'] = native().crc32Implementation();
  const loadRuns = args.quick ? 3 : 3;
  const stageRows: (string | number)[][] = [];
  for (const [name, open] of stores('throughput')) {
    const store = open();
    const putMs = await timeAsync(async () => {
      const r = await store.put(ids, seq);
      if (!r || r.entriesWritten !== tokens / 256) throw new Error(`${name}: put failed`);
    });
    const ts: number[] = [];
    for (let r = 0; r < loadRuns; r++) {
      ts.push(await timeAsync(async () => {
        const loaded = await store.load(ids, cache);
        if (!loaded || loaded.length !== tokens) throw new Error(`${name}: load missed`);
        loaded.sequence.free();
      }));
    }
    const loadMs = median(ts);
    let fetchCell = '-';
    if (name === 'redis') {
      // The load's stages one by one, in this process, as load() runs them: the transfer, during
      // which each entry is checked and its rows placed as soon as it is in (time spent on that
      // counted apart), then the export's checksum and the import. CPU time of this process and
      // of redis-server (INFO cpu) per load, to judge the result apart from the machine's load.
      const backend = new RedisBackend({ url: redisUrl!, prefix: `kvc-bench:throughput:${process.pid}:`, partBytes: 8 << 20, ttlSeconds: 600, timeoutMs: 60_000, readConnections: connections });
      const { chainHashes, chunkKey, fingerprint } = await import('../lib/prefix-store/keys');
      const { findPrefix } = await import('../lib/prefix-store/plan');
      const { EntryReceiver } = await import('../lib/prefix-store/receive');
      const plan = (await findPrefix(backend, fingerprint('default', cache.config, 256), Uint32Array.from(ids), 256, 'compacted'))!;
      const chain = chainHashes(fingerprint('default', cache.config, 256), Uint32Array.from(ids), 256);
      if (plan.keys.length !== chain.length - 1 || plan.keys[0] !== chunkKey(chain, 1)) throw new Error('redis: unexpected plan');
      const { Scratch } = await import('../lib/prefix-store/scratch');
      const received = new Scratch(60_000);
      const joined = new Scratch(60_000);
      const stage: Record<string, number[]> = { fetch: [], placing: [], afterLast: [], checksum: [], import: [], total: [] };
      const cpu: number[] = [];
      const cpuAfter: number[] = [];
      const serverCpu: number[] = [];
      const admin = new Redis(redisUrl!);
      const redisCpuMs = async () => {
        const info = await admin.info('cpu');
        const field = (name: string) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? NaN);
        return 1000 * (field('used_cpu_sys') + field('used_cpu_user'));
      };
      // As load() does: the buffers of the last load are reused (the first run pays the page faults).
      for (let r = 0; r < loadRuns + 1; r++) {
        const loans: (() => void)[] = [];
        const borrow = (scratch: InstanceType<typeof Scratch>) => (bytes: number) => {
          const loan = scratch.take(bytes);
          loans.push(loan.done);
          return loan.buffer;
        };
        const s0 = await redisCpuMs();
        const c0 = process.cpuUsage();
        const start = performance.now();
        let placing = 0;
        const receiver = new EntryReceiver(plan, 256, borrow(joined), args.values.join ? undefined : cache);
        const values = await backend.get(plan.keys, borrow(received), (i, v) => {
          const t = performance.now();
          receiver.take(i, v);
          placing += performance.now() - t;
        });
        const fetched = performance.now();
        const cFetched = process.cpuUsage();
        values.forEach((v, i) => receiver.take(i, v));
        const got = receiver.finish();
        if ('damaged' in got || 'gone' in got) throw new Error('redis: damaged entries');
        const summed = performance.now();
        if ('sequence' in got) got.sequence.free();
        else cache.importSequence(got.bytes).free();
        const end = performance.now();
        loans.forEach((done) => done());
        const c = process.cpuUsage(c0);
        const after = process.cpuUsage(cFetched);
        const serverMs = (await redisCpuMs()) - s0;
        if (r === 0) continue; // the first run touches fresh memory
        stage['fetch']!.push(fetched - start);
        stage['placing']!.push(placing);
        stage['checksum']!.push(summed - fetched);
        stage['import']!.push(end - summed);
        stage['afterLast']!.push(end - fetched);
        stage['total']!.push(end - start);
        cpu.push((c.user + c.system) / 1000);
        cpuAfter.push((after.user + after.system) / 1000);
        serverCpu.push(serverMs);
      }
      admin.disconnect();
      received.clear();
      joined.clear();
      await backend.close();
      const ms = Object.fromEntries(Object.entries(stage).map(([k, v]) => [k, median(v)]));
      const labels: Record<string, string> = {
        fetch: `fetch over ${connections} connection(s), entries checked and placed as they arrive`,
        placing: '  of which checking and placing entries (CRC, copy to their final place)',
        checksum: args.values.join ? 'after the last byte: the export checksum' : 'after the last byte: finishing the chunk import',
        import: args.values.join ? 'after the last byte: importSequence' : 'after the last byte: freeing the sequence',
        afterLast: 'after the last byte, in all',
        total: 'the four stages (a load without its lookup)',
      };
      const cpuMs = median(cpu);
      const afterMs = median(cpuAfter);
      const serverMs = median(serverCpu);
      out['throughput.redis.stagesMs'] = { ...ms, processCpuMs: cpuMs, processCpuAfterLastMs: afterMs, serverCpuMs: serverMs, connections, loadavg: os.loadavg() };
      stageRows.push(...Object.entries(ms).map(([k, v]) => [labels[k]!, fmt(v, 0), fmt(gbps(v))]));
      stageRows.push(['CPU time of this process per load', fmt(cpuMs, 0), fmt(gbps(cpuMs))]);
      stageRows.push(['  of which after the last byte', fmt(afterMs, 0), fmt(gbps(afterMs))]);
      stageRows.push(['CPU time of redis-server per load (INFO cpu)', fmt(serverMs, 0), fmt(gbps(serverMs))]);
      // The critical path in CPU time: the server's sending overlaps this process's work
      // during the fetch, so a load on an otherwise idle machine with a core for each takes
      // at least max(server, this process's part during the fetch) + this process's part after it.
      const critical = Math.max(serverMs, cpuMs - afterMs) + afterMs;
      out['throughput.redis.criticalCpuMs'] = critical;
      stageRows.push(['critical path in CPU time: max(server, this process during the fetch) + after the last byte', fmt(critical, 0), fmt(gbps(critical))]);
      fetchCell = String(fmt(gbps(ms['fetch']!)));
    }
    out[`throughput.${name}`] = { putGBps: gbps(putMs), loadGBps: gbps(loadMs), putMs, loadMs };
    rows.push([name, fmt(gbps(putMs)), fmt(gbps(loadMs)), fetchCell]);
    await store.delete(ids, cache);
    await store.close();
  }
  cache.dispose();
  console.log(`\n## put / load, ${layers} layers × 8 kv heads × 128, int8, ${tokens} tokens: ${(exportBytes / 1e9).toFixed(2)} GB of export bytes (GB/s; load: median of ${loadRuns}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')})\n`);
  console.log(markdownTable(['backend', 'put GB/s', 'load GB/s (match + fetch + verify + import)', 'fetch only GB/s'], rows));
  if (stageRows.length > 0) {
    console.log(`\n### Stages of a Redis load (median of ${loadRuns}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')})\n`);
    console.log(markdownTable(['stage', 'ms', 'GB/s of export bytes'], stageRows));
  }
}

async function storeDown() {
  // A match against a store that cannot answer: nothing listening on the port, and (with a
  // Redis URL) a server paused with CLIENT PAUSE. Default timeoutMs (250 ms).
  const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, threads: 1 });
  const ids = Array.from({ length: 32768 }, (_, i) => i % 32000);
  const rows: (string | number)[][] = [];
  const measure = async (label: string, store: PrefixStore, before?: () => Promise<void>, after?: () => Promise<void>) => {
    const ts: number[] = [];
    for (let r = 0; r < 5; r++) {
      await before?.();
      let length = -1;
      ts.push(await timeAsync(async () => void (length = (await store.match(ids, cache)).length)));
      await after?.();
      if (length !== 0) throw new Error(`${label}: expected a miss`);
    }
    out[`down.${label}Ms`] = { median: median(ts), max: Math.max(...ts) };
    rows.push([label, fmt(median(ts), 1), fmt(Math.max(...ts), 1)]);
  };
  const nowhere = PrefixStore.redis({ url: 'redis://127.0.0.1:1' });
  await measure('redis: nothing listening', nowhere);
  await nowhere.close();
  if (redisUrl) {
    const store = PrefixStore.redis({ url: redisUrl, keyPrefix: `kvc-bench:down:${process.pid}:` });
    await store.match(ids, cache); // connected
    const admin = new Redis(redisUrl);
    await measure('redis: server paused', store, async () => void (await admin.call('CLIENT', 'PAUSE', '600', 'ALL')), async () => {
      await admin.call('CLIENT', 'UNPAUSE');
      await new Promise((r) => setTimeout(r, 50));
    });
    admin.disconnect();
    await store.close();
  }
  cache.dispose();
  console.log('\n## match with the store down (timeoutMs 250, 5 tries)\n');
  console.log(markdownTable(['store', 'median ms to the miss', 'max ms'], rows));
}

async function main() {
  if (!redisUrl) console.log('(no --redis URL or KVCOMPACT_REDIS_URL: the Redis rows are left out)');
  const part = args.values.part;
  if (!part || part === 'ttft') await firstToken();
  if (!part || part === 'match') await matchLatency();
  if (!part || part === 'down') await storeDown();
  if (!part || part === 'throughput') await throughput();
  writeJson(args.json, out);
}
main();
