// Model-based test: random sequences of operations (create, append in every format and input
// type, attention, fork, truncate, evict with each policy family and budget kind, compact,
// export/import, free) on small caches with a tight maxBytes, so the budget runs out often,
// against CacheModel (cache-model.ts). After every step: the touched sequences' lengths,
// nextPosition, positions, beta and read-back rows (bit-exact for plain formats, within the
// format's bound for quantized or rotated ones) and the cache's stats (sequences, rows,
// blocks used and free, bytes) must equal the model. An operation either succeeds and
// matches the model or throws a KVCacheError with an expected code and changes nothing; an
// append or import fails with OUT_OF_MEMORY exactly when the model says it does not fit.
// Seeds are printed; replay one run with KVC_TEST_SEED=<run seed>.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, KVCacheError, type Sequence } from '../../lib/index';
import { outputTol } from '../foundation/attention-tolerance';
import { attentionReference } from '../reference/attention-reference';
import { relError } from '../reference/compare';
import { toF16Bits } from '../reference/formats-reference';
import { type Rng, randn, testRng } from '../reference/random';
import { CacheModel, type ModelConfig, type Row, rowTolerance } from './cache-model';

/** The cache's state in stats(): workspaceBytes is scratch memory a failed run may have warmed. */
function cacheState<T extends { workspaceBytes?: number }>(stats: T): Omit<T, 'workspaceBytes'> {
  const { workspaceBytes: _scratch, ...state } = stats;
  return state;
}

const CONFIGS: Array<[string, ModelConfig]> = [
  ['f32/f32', { layers: 2, kvHeads: 2, headDim: 8, queryHeads: 4, blockSize: 4, keys: 'f32', values: 'f32', groupSize: 8, rotate: false }],
  ['f16/bf16', { layers: 1, kvHeads: 2, headDim: 16, queryHeads: 2, blockSize: 3, keys: 'f16', values: 'bf16', groupSize: 16, rotate: false }],
  ['bf16/f16 rotated', { layers: 2, kvHeads: 1, headDim: 16, queryHeads: 2, blockSize: 5, keys: 'bf16', values: 'f16', groupSize: 16, rotate: true }],
  ['int8/int4', { layers: 2, kvHeads: 2, headDim: 16, queryHeads: 2, blockSize: 5, keys: 'int8', values: 'int4', groupSize: 8, rotate: false }],
  ['int4/int8 rotated', { layers: 1, kvHeads: 2, headDim: 16, queryHeads: 4, blockSize: 4, keys: 'int4', values: 'int8', groupSize: 16, rotate: true }],
  ['f16/int8', { layers: 3, kvHeads: 1, headDim: 8, queryHeads: 3, blockSize: 2, keys: 'f16', values: 'int8', groupSize: 4, rotate: false }],
];
const OPS_PER_CONFIG = Number(process.env.KVC_MODEL_OPS ?? 1700);
const CAPACITY_BLOCKS = 40;

function blockBytes(c: ModelConfig): number {
  const probe = new KVCache({ ...c, threads: 1 });
  const b = probe.stats().blockBytes;
  probe.dispose();
  return b;
}

function codeOf(e: unknown): string {
  if (e instanceof KVCacheError) return e.code;
  throw e;
}

class Run {
  readonly cache: KVCache;
  readonly model: CacheModel;
  readonly live: Sequence[] = [];
  readonly counts: Record<string, number> = {};
  step = 0;
  op = '';

  constructor(readonly name: string, readonly c: ModelConfig, readonly rng: Rng) {
    const bb = blockBytes(c);
    this.cache = new KVCache({ ...c, maxBytes: (CAPACITY_BLOCKS + 0.5) * bb, threads: 1, recentQueries: 64 });
    this.model = new CacheModel(c, CAPACITY_BLOCKS);
  }

  where(extra = ''): string {
    return `${this.name} step ${this.step} (${this.op})${extra ? ': ' + extra : ''}`;
  }

  pick(): Sequence {
    return this.live[this.rng.int(0, this.live.length - 1)]!;
  }

  count(op: string): void {
    this.counts[op] = (this.counts[op] ?? 0) + 1;
  }

  /** The read-back rows of every stream of seq equal the model's. */
  checkSeq(seq: Sequence): void {
    const { layers, kvHeads, headDim: D } = this.c;
    const m = this.model.seqs.get(seq)!;
    for (let l = 0; l < layers; l++) {
      expect(seq.nextPosition(l), this.where(`nextPosition(${l})`)).toBe(m.next[l]);
      for (let h = 0; h < kvHeads; h++) {
        const rows = m.streams[l * kvHeads + h]!.rows;
        const r = seq.read(l, h);
        const w = `layer ${l} head ${h}`;
        expect(r.positions.length, this.where(`${w} length`)).toBe(rows.length);
        for (let t = 0; t < rows.length; t++) {
          const row = rows[t]!;
          if (r.positions[t] !== row.pos || r.beta[t] !== row.beta) {
            expect.fail(this.where(`${w} row ${t}: position ${r.positions[t]} beta ${r.beta[t]}, model ${row.pos} ${row.beta}`));
          }
          this.checkRow(r.keys.subarray(t * D, (t + 1) * D), row.k, this.c.keys, `${w} row ${t} keys`);
          this.checkRow(r.values.subarray(t * D, (t + 1) * D), row.v, this.c.values, `${w} row ${t} values`);
        }
      }
    }
  }

  checkRow(got: Float32Array, want: Float32Array, storage: ModelConfig['keys'], label: string): void {
    const tol = rowTolerance(storage, this.c.rotate);
    let scale = 0;
    for (const x of want) scale = Math.max(scale, Math.abs(x));
    const bound = tol * scale;
    for (let i = 0; i < want.length; i++) {
      const ok = bound === 0 ? Object.is(got[i], want[i]) : Math.abs(got[i]! - want[i]!) <= bound;
      if (!ok) expect.fail(this.where(`${label}[${i}] = ${got[i]}, model ${want[i]} (bound ${bound})`));
    }
  }

  checkStats(): void {
    const s = this.cache.stats();
    const used = this.model.blocksUsed();
    const w = this.where('stats');
    expect(s.sequences, w).toBe(this.live.length);
    expect(s.rows, w).toBe(this.model.rows());
    expect(s.blocksUsed, w).toBe(used);
    expect(s.blocksFree, w).toBe(CAPACITY_BLOCKS - used);
    expect(s.bytesUsed, w).toBe(used * s.blockBytes);
  }

  rowsOf(n: number, f16: boolean): Float32Array | Uint16Array {
    const x = randn(this.rng, n);
    return f16 ? toF16Bits(x) : x;
  }

  append(maxRows = 9): void {
    const seq = this.pick();
    const { kvHeads, headDim: D } = this.c;
    const layer = this.rng.int(0, this.c.layers - 1);
    const T = this.rng.int(1, maxRows);
    // Keys and values share one input type: f32, or f16 bits in a Uint16Array.
    const f16 = this.rng.int(0, 3) === 0;
    const keys = this.rowsOf(T * kvHeads * D, f16);
    const values = this.rowsOf(T * kvHeads * D, f16);
    const next = this.model.seqs.get(seq)!.next[layer]!;
    const explicit = this.rng.int(0, 3) === 0;
    const start = explicit ? next + this.rng.int(0, 5) : next;
    const positions = Array.from({ length: T }, (_, i) => start + i * (explicit ? this.rng.int(1, 3) : 1));
    for (let i = 1; i < T && explicit; i++) positions[i] = Math.max(positions[i]!, positions[i - 1]! + 1);
    const cost = this.model.appendCost(seq, layer, T);
    const free = CAPACITY_BLOCKS - this.model.blocksUsed();
    try {
      seq.append(layer, keys, values, explicit ? { positions } : undefined);
    } catch (e) {
      expect(codeOf(e), this.where(`append of ${cost} blocks with ${free} free: ${(e as Error).message}`)).toBe('OUT_OF_MEMORY');
      expect(cost, this.where('OUT_OF_MEMORY although it fits')).toBeGreaterThan(free);
      this.count('append: OUT_OF_MEMORY');
      return;
    }
    expect(cost, this.where('append succeeded beyond the budget')).toBeLessThanOrEqual(free);
    this.model.append(seq, layer, keys, values, positions);
    this.count('append');
    this.checkSeq(seq);
  }

  attention(): void {
    const seq = this.pick();
    const { kvHeads, headDim: D, queryHeads } = this.c;
    const layer = this.rng.int(0, this.c.layers - 1);
    const m = this.model.seqs.get(seq)!;
    let shortest = Infinity;
    for (let h = 0; h < kvHeads; h++) shortest = Math.min(shortest, m.streams[layer * kvHeads + h]!.rows.length);
    if (shortest === 0) return;
    const tq = this.rng.int(1, Math.min(3, shortest));
    const q = randn(this.rng, tq * queryHeads * D);
    const streams = Array.from({ length: kvHeads }, (_, h) => seq.read(layer, h));
    const out = seq.attention(layer, q, { accumulateScores: this.rng.int(0, 1) === 1, recordQueries: this.rng.int(0, 1) === 1 });
    const ref = attentionReference({ headDim: D, queryHeads, queries: q, streams });
    const exact = !this.c.rotate && this.c.keys !== 'int8' && this.c.keys !== 'int4' && this.c.values !== 'int8' && this.c.values !== 'int4';
    const tol = exact ? outputTol(shortest).rel : 3e-5;
    const err = relError(out, ref.out);
    if (!(err <= tol)) expect.fail(this.where(`attention error ${err} > ${tol}`));
    this.count('attention');
  }

  fork(): void {
    if (this.live.length >= 5) return;
    const parent = this.pick();
    const child = parent.fork();
    this.model.fork(parent, child);
    this.live.push(child);
    this.count('fork');
    this.checkSeq(child);
  }

  create(): void {
    if (this.live.length >= 5) return;
    const seq = this.cache.createSequence();
    this.model.create(seq);
    this.live.push(seq);
    this.count('create');
  }

  free(): void {
    if (this.live.length <= 1) return;
    const seq = this.pick();
    seq.free();
    this.model.free(seq);
    this.live.splice(this.live.indexOf(seq), 1);
    this.count('free');
  }

  truncate(): void {
    const seq = this.pick();
    const m = this.model.seqs.get(seq)!;
    const top = Math.max(...m.next);
    const n = this.rng.int(0, top);
    seq.truncate(n);
    this.model.truncate(seq, n);
    this.count('truncate');
    this.checkSeq(seq);
  }

  /** After an eviction or compaction: every stream kept a subsequence of its rows (by position). */
  keptRows(seq: Sequence, compacted: boolean): void {
    const { layers, kvHeads, headDim: D } = this.c;
    const m = this.model.seqs.get(seq)!;
    for (let l = 0; l < layers; l++) {
      for (let h = 0; h < kvHeads; h++) {
        const i = l * kvHeads + h;
        const before = m.streams[i]!.rows;
        const r = seq.read(l, h);
        const kept: Row[] = [];
        const keepIndex: number[] = [];
        let j = 0;
        for (let t = 0; t < r.positions.length; t++) {
          while (j < before.length && before[j]!.pos !== r.positions[t]) j++;
          if (j === before.length) expect.fail(this.where(`layer ${l} head ${h}: kept row ${t} (position ${r.positions[t]}) is not one of the rows, in order`));
          keepIndex.push(j);
          const row = before[j++]!;
          // Keys are kept rows as they were stored; compaction refits values and beta.
          this.checkRow(r.keys.subarray(t * D, (t + 1) * D), row.k, this.c.keys, `layer ${l} head ${h} kept row ${t} keys`);
          if (!compacted) {
            this.checkRow(r.values.subarray(t * D, (t + 1) * D), row.v, this.c.values, `layer ${l} head ${h} kept row ${t} values`);
            expect(r.beta[t], this.where('beta of an evicted stream')).toBe(row.beta);
            kept.push(row);
          } else {
            kept.push({ k: row.k, v: r.values.slice(t * D, (t + 1) * D), pos: row.pos, beta: r.beta[t]! });
          }
        }
        this.model.replaceRows(seq, i, kept, kept.length !== before.length || compacted && kept.length > 0, compacted ? undefined : keepIndex);
      }
    }
  }

  evict(): void {
    const seq = this.pick();
    const r = this.rng;
    const sinks = r.int(0, 2);
    const recent = r.int(0, 3);
    const window = r.int(1, 8);
    const choices: Array<() => [string, EvictionPolicy]> = [
      () => ['slidingWindow', EvictionPolicy.slidingWindow({ window, sinks })],
      () => ['streamingLLM', EvictionPolicy.streamingLLM({ window, sinks })],
      () => ['h2o', EvictionPolicy.h2o({ sinks, recent })],
      () => ['snapKV', EvictionPolicy.snapKV({ window: r.int(1, 2), sinks, recent })],
      () => ['tova', EvictionPolicy.tova({ sinks, recent })],
      () => ['keyNorm', EvictionPolicy.keyNorm({ sinks, recent })],
      () => ['random', EvictionPolicy.random(r.int(0, 1000), { sinks, recent })],
      () => ['custom', EvictionPolicy.custom((v) => Float32Array.from(v.positions, (p) => ((p * 2654435761) >>> 0) / 2 ** 32), { sinks, recent })],
    ];
    const [kind, policy] = choices[r.int(0, choices.length - 1)]!();
    const windowed = kind === 'slidingWindow' || kind === 'streamingLLM';
    const budgets = [
      { ratio: r.int(0, 10) / 10 },
      { keep: r.int(0, 12) },
      { ratio: r.int(1, 9) / 10, perHead: 'adaptive' as const },
      { ratio: r.int(1, 9) / 10, schedule: 'pyramid' as const },
    ];
    const budget = windowed && r.int(0, 1) === 0 ? undefined : budgets[r.int(0, budgets.length - 1)]!;
    const m = this.model.seqs.get(seq)!;
    const lengthsBefore = m.streams.map((s) => s.rows.length);
    const positionsBefore = m.streams.map((s) => s.rows.map((row) => row.pos));
    this.op = `evict ${kind} ${JSON.stringify(budget)}`;
    const statsBefore = cacheState(this.cache.stats());
    let report;
    try {
      report = seq.evict(policy, budget);
    } catch (e) {
      const code = codeOf(e);
      expect(['INVALID_ARGUMENT', 'OUT_OF_MEMORY'], this.where(`evict threw ${code}: ${(e as Error).message}`)).toContain(code);
      expect(cacheState(this.cache.stats()), this.where('a failed eviction changed the stats')).toEqual(statsBefore);
      this.checkSeq(seq);
      this.count(`evict: ${code}`);
      return;
    }
    this.keptRows(seq, false);
    const after = m.streams.map((s) => s.rows.length);
    expect(Array.from(report.keptPerStream), this.where('keptPerStream')).toEqual(after);
    if (windowed && budget === undefined) {
      // The first `sinks` rows and the newest `window` rows, exactly.
      m.streams.forEach((st, i) => {
        const p = positionsBefore[i]!;
        const want = p.length <= sinks + window ? p : [...p.slice(0, sinks), ...p.slice(p.length - window)];
        expect(st.rows.map((row) => row.pos), this.where(`stream ${i} kept`)).toEqual(want);
      });
    }
    if (budget && 'keep' in budget && !('perHead' in budget)) {
      after.forEach((n, i) => expect(n, this.where(`keep ${budget.keep} of ${lengthsBefore[i]}`)).toBe(Math.min(lengthsBefore[i]!, budget.keep!)));
    }
    if (budget && 'ratio' in budget && Object.keys(budget).length === 1) {
      after.forEach((n, i) => expect(n, this.where(`ratio ${budget.ratio} of ${lengthsBefore[i]}`)).toBe(Math.min(lengthsBefore[i]!, Math.floor(budget.ratio! * lengthsBefore[i]! + 0.5))));
    }
    this.count(`evict ${kind}`);
  }

  compact(): void {
    const seq = this.pick();
    const method = this.rng.int(0, 1) === 0 ? 'highest-attention' : 'omp';
    const compactor = new Compactor({ method, ratio: this.rng.int(3, 8) / 10, protect: { sinks: this.rng.int(0, 1), recent: this.rng.int(0, 2) }, threads: 1 });
    this.op = `compact ${method}`;
    const statsBefore = cacheState(this.cache.stats());
    try {
      compactor.compactSync(seq);
    } catch (e) {
      const code = codeOf(e);
      expect(['INVALID_ARGUMENT', 'OUT_OF_MEMORY'], this.where(`compact threw ${code}: ${(e as Error).message}`)).toContain(code);
      expect(cacheState(this.cache.stats()), this.where('a failed compaction changed the stats')).toEqual(statsBefore);
      this.checkSeq(seq);
      this.count(`compact: ${code}`);
      return;
    }
    this.keptRows(seq, true);
    this.count('compact');
  }

  exportImport(): void {
    if (this.live.length >= 5) return;
    const seq = this.pick();
    const bytes = seq.export();
    const cost = this.model.importCost(seq);
    const free = CAPACITY_BLOCKS - this.model.blocksUsed();
    let copy: Sequence;
    try {
      copy = this.cache.importSequence(bytes);
    } catch (e) {
      expect(codeOf(e), this.where('import')).toBe('OUT_OF_MEMORY');
      expect(cost, this.where('import: OUT_OF_MEMORY although it fits')).toBeGreaterThan(free);
      this.count('import: OUT_OF_MEMORY');
      return;
    }
    expect(cost, this.where('import succeeded beyond the budget')).toBeLessThanOrEqual(free);
    this.model.importCopy(seq, copy);
    this.live.push(copy);
    expect(copy.export(), this.where('export of the import')).toEqual(bytes);
    this.count('import');
    this.checkSeq(copy);
  }
}

describe('random operations against a model of the cache', () => {
  for (const [name, c] of CONFIGS) {
    it(`${name}: ${OPS_PER_CONFIG} operations`, () => {
      const rng = testRng();
      console.log(`[model] ${name}: seed ${rng.seed}`);
      const run = new Run(name, c, rng);
      run.create();
      // Weights: appends dominate (a few long ones) so the streams grow into the budget; the
      // rest shrink them.
      const ops: Array<[number, () => void]> = [
        [28, () => run.append()], [3, () => run.append(40)], [10, () => run.attention()], [6, () => run.fork()], [5, () => run.create()],
        [6, () => run.free()], [8, () => run.truncate()], [10, () => run.evict()], [4, () => run.compact()],
        [6, () => run.exportImport()],
      ];
      const total = ops.reduce((s, [w]) => s + w, 0);
      for (run.step = 0; run.step < OPS_PER_CONFIG; run.step++) {
        let x = rng.int(0, total - 1);
        const [, op] = ops.find(([w]) => (x -= w) < 0)!;
        run.op = op.toString().replace(/.*run\.(\w+).*/s, '$1');
        op();
        run.checkStats();
        if (run.step % 50 === 0) for (const s of run.live) run.checkSeq(s);
      }
      // If the random mix never filled the budget (eviction keeps whole blocks, so some seeds
      // stay below it), long appends fill it now: the budget path runs in every full-length
      // run, checked against the model like any other append.
      for (let i = 0; OPS_PER_CONFIG >= 1000 && i < 400 && !run.counts['append: OUT_OF_MEMORY']; i++) {
        if (run.live.length === 0) run.create();
        run.op = 'append (filling the budget)';
        run.append(40);
        run.checkStats();
      }
      for (const s of run.live) run.checkSeq(s);
      console.log(`[model] ${name}: ${JSON.stringify(run.counts)}`);
      // Every kind of operation ran, and in a full-length run the budget ran out at least once.
      const required = ['append', 'attention', 'fork', 'truncate', 'compact', 'import', 'free'];
      if (OPS_PER_CONFIG >= 1000) required.push('append: OUT_OF_MEMORY');
      for (const op of required) {
        expect(run.counts[op] ?? 0, `${name}: ${op} never ran`).toBeGreaterThan(0);
      }
      run.cache.dispose();
    }, 120_000);
  }
});
