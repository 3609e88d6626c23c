// Background maintenance: keeps one sequence under a memory target while the engine keeps
// appending and decoding (README "Memory targets in the background"). A pass snapshots the
// sequence (a copy-on-write fork: no row is copied), shrinks the snapshot with a Compactor
// (off the main thread, at the lowest thread priority) or an EvictionPolicy, then swaps the
// result in with one native call that keeps every row appended meanwhile
// (cpp/core/replace_prefix.cpp). Decode waits only for the snapshot and the swap.
import { EventEmitter } from 'node:events';

import { Compactor, type CompactionReport } from './compactor';
import { KVCacheError, invalidArgument } from './errors';
import { EvictionPolicy } from './eviction-policy';
import { asyncDisposeSymbol, disposeSymbol } from './lifecycle';
import { native } from './native/binding';
import { Sequence } from './sequence';
import type { EvictionReport } from './types';
import { integerIn, knownKeys, optionsObject } from './validate';

/** Options of `cache.maintain(seq, options)`. Give maxBytes, bytesPerToken or both (the smaller target applies). */
export interface MaintainOptions {
  /** Target: the sequence's blocks (block-table entries × blockBytes, shared blocks included) stay under this many bytes. */
  maxBytes?: number;
  /** Target: bytes per token of context (the next position of layer 0), e.g. a sixth of f16's `KVCache.bytesPerToken`. */
  bytesPerToken?: number;
  /**
   * How a pass shrinks the oldest rows: a Compactor (Attention Matching with the sequence's
   * recorded queries unless the compactor says otherwise; runs off the main thread) or an
   * EvictionPolicy (its scores and gather run on the main thread, on the snapshot).
   */
  policy: Compactor | EvictionPolicy;
  /** Rows at the end of every stream a compaction pass never changes (its protect.recent). Default 64. */
  keepRecent?: number;
  /** Rows at the start of every stream a compaction pass never changes (its protect.sinks). Default 4. */
  sinks?: number;
  /**
   * Each pass shrinks the sequence to (1 − headroom) × target, so that passes come once per
   * headroom × target bytes of growth instead of at every token. In (0, 1), default 0.1.
   */
  headroom?: number;
}

/** One finished pass ('pass' event). */
export interface MaintenancePass {
  /** 'compact' (a Compactor) or 'evict' (an EvictionPolicy). */
  kind: 'compact' | 'evict';
  /** The target in bytes when the pass started. */
  targetBytes: number;
  /** The sequence's bytes (blocks × blockBytes) when the pass started. */
  bytesBefore: number;
  /** The sequence's rows (over every stream) when the pass started. */
  rowsBefore: number;
  /** Bytes right after the swap (rows appended during the pass included). */
  bytesAfter: number;
  /** Rows right after the swap (rows appended during the pass included). */
  rowsAfter: number;
  /** Rows the sequence gained while the pass ran (over every stream); all of them are kept. */
  rowsAppendedDuring: number;
  /** Milliseconds: snapshot (main thread), work (the compaction or eviction), swap (main thread), total (wall). */
  milliseconds: { snapshot: number; work: number; swap: number; total: number };
  /** The Compactor's or the EvictionPolicy's report of the snapshot's shrinking. */
  report: CompactionReport | EvictionReport;
}

/** A pass whose result was dropped ('skip' event): the sequence changed below the snapshot, or the target cannot be reached. */
export interface MaintenanceSkip {
  /** 'changed': the sequence changed below the snapshot or its low-rank bases were refitted (nothing applied); 'unreachable': no block can be freed within the target, or low-rank streams are still calibrating. */
  reason: 'changed' | 'unreachable';
  /** What happened, for people. */
  message: string;
}

/**
 * The handle `cache.maintain()` returns. Events: 'pass' (MaintenancePass), 'skip'
 * (MaintenanceSkip), 'error' (a KVCacheError of a failed pass; the sequence is unchanged and
 * maintenance goes on). An 'error' without a listener is not thrown: it is kept in
 * `lastError`. stop() (or `using`) ends maintenance and aborts a pass in flight.
 */
export class Maintainer extends EventEmitter {
  /** The maintained sequence. */
  readonly sequence: Sequence;
  /** Passes applied so far. */
  passes = 0;
  /** Passes whose result was dropped or that had nothing to do ('skip' events) so far. */
  skips = 0;
  /** Failed passes ('error' events) so far. */
  errors = 0;
  /** The last failure (also emitted as 'error' when someone listens). */
  lastError: unknown = undefined;
  readonly #policy: Compactor | EvictionPolicy;
  readonly #maxBytes: number;
  readonly #bytesPerToken: number;
  readonly #keepRecent: number;
  readonly #sinks: number;
  readonly #headroom: number;
  readonly #blockBytes: number;
  readonly #tiered: { topBlocks: number; lowestRowsPerBlock: number } | undefined;
  readonly #blockSize: number;
  readonly #streams: number;
  #inFlight: Promise<void> | undefined;
  #running = false;
  #abort: AbortController | undefined;
  #stopped = false;
  /** After an unreachable target: no new pass before the sequence holds more rows than this. */
  #quietUntilRows = 0;
  /** Rows at the front of every stream that are results of earlier compaction passes (sinks included). */
  #done = 0;

  /** @internal Made by KVCache.maintain(). */
  constructor(seq: Sequence, options: MaintainOptions) {
    super();
    if (!Sequence.isSequence(seq)) throw invalidArgument('seq', 'a Sequence', seq);
    seq.checkAlive();
    const o = optionsObject('options', options);
    knownKeys('options', o, ['maxBytes', 'bytesPerToken', 'policy', 'keepRecent', 'sinks', 'headroom']);
    const positive = (name: string, v: unknown): number => {
      if (v === undefined) return Infinity;
      if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw invalidArgument(`options.${name}`, 'a finite number > 0', v);
      return v;
    };
    this.#maxBytes = positive('maxBytes', o['maxBytes']);
    this.#bytesPerToken = positive('bytesPerToken', o['bytesPerToken']);
    if (this.#maxBytes === Infinity && this.#bytesPerToken === Infinity) {
      throw invalidArgument('options', 'an object with maxBytes or bytesPerToken', options);
    }
    const policy = o['policy'];
    if (!(policy instanceof Compactor) && !EvictionPolicy.isPolicy(policy)) {
      throw invalidArgument('options.policy', 'a Compactor or an EvictionPolicy', policy);
    }
    this.#policy = policy;
    this.#keepRecent = o['keepRecent'] === undefined ? 64 : integerIn('options.keepRecent', o['keepRecent'], 0, 1 << 20);
    this.#sinks = o['sinks'] === undefined ? 4 : integerIn('options.sinks', o['sinks'], 0, 1 << 20);
    const headroom = o['headroom'] ?? 0.1;
    if (typeof headroom !== 'number' || !(headroom > 0 && headroom < 1)) throw invalidArgument('options.headroom', 'a number in (0, 1)', headroom);
    this.#headroom = headroom;
    const c = seq.cache.config;
    const stats = seq.cache.stats();
    this.#blockBytes = stats.blockBytes;
    // Tiers: rows per block of the top tier's window and of the lowest tier (which takes every
    // row a pass keeps beyond the window), for #keepRows.
    if (c.tiers && stats.tiers) {
      const rpb = stats.tiers.map((t) => t.rowsPerBlock);
      // The aged tiers above the lowest hold at most their window plus a block of the tier below.
      let topBlocks = 0;
      for (let k = 0; k + 1 < rpb.length; k++) topBlocks += Math.ceil(((c.tiers[k]!.rows ?? 0) + rpb[k + 1]! - 1) / rpb[k]!);
      this.#tiered = { topBlocks, lowestRowsPerBlock: rpb[rpb.length - 1]! };
    }
    this.#blockSize = c.blockSize;
    this.#streams = c.layers * c.kvHeads;
    this.sequence = seq;
    if (seq.afterAppend) throw new KVCacheError('BUSY', 'maintain: the sequence is already maintained (stop() the other Maintainer first)');
    seq.afterAppend = () => this.check();
  }

  /** The target in bytes now (the smaller of maxBytes and bytesPerToken × tokens of context). */
  targetBytes(): number {
    const tokens = this.sequence.nextPosition(0);
    return Math.min(this.#maxBytes, this.#bytesPerToken * tokens);
  }

  /** The sequence's bytes and rows now (every stream; blocks shared with forks included). */
  usage(): { bytes: number; rows: number } {
    const u = native().sequenceUsage(this.sequence.native);
    return { bytes: u.blocks * this.#blockBytes, rows: u.rows };
  }

  /** True while a pass runs. */
  get running(): boolean {
    return this.#running;
  }

  /**
   * Starts a pass when none is running and the sequence's next block per stream would cross
   * its target (streams of different lengths: once it is over); returns at once. Called after
   * every append to the last layer; call it yourself after other changes.
   */
  check(): void {
    if (this.#stopped || this.#running) return;
    const seq = this.sequence;
    if (seq.freed) {
      this.stop();
      return;
    }
    const target = this.targetBytes();
    const u = native().sequenceUsage(seq.native);
    const before = { bytes: u.blocks * this.#blockBytes, rows: u.rows };
    if (before.rows <= this.#quietUntilRows) return;
    // Streams of equal length (the usual case) start a pass when they end on a whole block and
    // the next append (a new block per stream) would cross the target: the sequence stays
    // under it, the snapshot ends on a block boundary, and the swap shares every block instead
    // of copying the rows appended during the pass. Otherwise: as soon as it is over.
    if (u.minRows === u.maxRows) {
      if (u.minRows % this.#blockSize !== 0 || before.bytes + this.#streams * this.#blockBytes <= target) return;
    } else if (before.bytes <= target) {
      return;
    }
    // #pass clears #running itself, synchronously when it finishes without waiting (an
    // eviction pass, a skip), so a decode loop that never yields still gets its next pass.
    this.#running = true;
    this.#inFlight = this.#pass(target, before).catch(() => undefined);
  }

  /** Resolves when no pass is running (at once when none is). */
  async idle(): Promise<void> {
    while (this.#running && this.#inFlight) await this.#inFlight;
  }

  /** Ends maintenance: no new pass starts, a pass in flight is aborted (nothing of it is applied). Resolves when it has settled. */
  stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      if (this.sequence.afterAppend) this.sequence.afterAppend = undefined;
      this.#abort?.abort();
    }
    return this.idle();
  }

  /** `using m = cache.maintain(...)`: stop() at the end of the scope. */
  [disposeSymbol](): void {
    void this.stop();
  }

  /** `await using m = ...`: stop() and wait for the pass in flight to settle. */
  async [asyncDisposeSymbol](): Promise<void> {
    await this.stop();
  }

  /** Rows per stream a pass keeps: whole blocks within (1 − headroom) × target, never fewer than the protected rows. */
  #keepRows(target: number): number {
    const B = this.#blockSize;
    const blocks = Math.floor(((1 - this.#headroom) * target) / (this.#streams * this.#blockBytes));
    const t = this.#tiered;
    // Tiers: the upper tiers' blocks hold their windows; every other block is the lowest tier's.
    const rows = t ? Math.min(blocks, t.topBlocks) * B + Math.max(0, blocks - t.topBlocks) * t.lowestRowsPerBlock : blocks * B;
    return Math.max(rows, this.#sinks + this.#keepRecent);
  }

  /**
   * What a compaction pass compacts. Window mode: only the oldest rows no pass has compacted
   * yet (after the sinks and the results of earlier passes), W of them, shrunk by the
   * compactor's ratio r (default 0.5) so that W × (1 − r) rows go; each row is then fitted
   * once, and a pass costs the same at 1K or 64K rows. When not enough such rows are left,
   * the whole older part (all but sinks and keepRecent) is compacted to `keep` rows.
   */
  #compactionPlan(keep: number, u: { minRows: number; maxRows: number }): { sinks: number; recent: number; targetTokens: number; done: number } {
    const policy = this.#policy as Compactor;
    const r = policy.options.ratio !== undefined && policy.options.ratio < 1 ? policy.options.ratio : 0.5;
    const B = this.#blockSize;
    // Remove at least `excess` rows, a whole number of blocks, so that the compacted snapshot
    // ends on a block boundary when the sequence did (the swap then copies nothing).
    const excess = Math.ceil((u.maxRows - keep) / B) * B;
    let W = Math.ceil(excess / (1 - r));
    for (let i = 0; i < 4 * B && (W - Math.ceil(W * r)) % B !== 0; i++) W++;
    const start = this.#done > u.minRows ? this.#sinks : Math.max(this.#done, this.#sinks);
    if (start + W <= u.minRows - this.#keepRecent) {
      const kept = Math.ceil(W * r);
      return { sinks: start, recent: u.minRows - start - W, targetTokens: u.minRows - W + kept, done: start + kept };
    }
    return { sinks: this.#sinks, recent: this.#keepRecent, targetTokens: keep, done: keep - this.#keepRecent };
  }

  async #pass(target: number, before: { bytes: number; rows: number }): Promise<void> {
    const seq = this.sequence;
    const cache = seq.cache;
    const t0 = performance.now();
    let snapshot: Sequence | undefined;
    const abort = new AbortController();
    this.#abort = abort;
    try {
      const keep = this.#keepRows(target);
      const u = native().sequenceUsage(seq.native);
      // Shrinking every stream to `keep` rows must free a block at all.
      const unreachable = this.#tiered ? keep >= u.maxRows : Math.ceil(keep / this.#blockSize) >= Math.ceil(u.maxRows / this.#blockSize);
      // Low-rank streams splice coefficient rows, so a pass waits until every stream has fitted its bases.
      if (unreachable || u.calibrating > 0) {
        // Retried once the sequence has grown (at the next whole block, when the target has grown too).
        this.#quietUntilRows = before.rows;
        this.skips++;
        this.emit('skip', {
          reason: 'unreachable',
          message: unreachable
            ? `the target (${Math.round(target)} bytes) needs fewer rows than the protected sinks + keepRecent of every stream`
            : `${u.calibrating} low-rank streams are still calibrating (their first rows are held unprojected, outside the blocks)`,
        } satisfies MaintenanceSkip);
        return;
      }
      snapshot = new Sequence(cache, native().snapshot(seq.native));
      const t1 = performance.now();
      let report: CompactionReport | EvictionReport;
      const policy = this.#policy;
      let done = this.#done;
      if (policy instanceof Compactor) {
        const plan = this.#compactionPlan(keep, u);
        report = await policy.compactInBackground(snapshot, {
          targetTokens: plan.targetTokens,
          protect: { sinks: plan.sinks, recent: plan.recent },
          threads: 1,
          signal: abort.signal,
        });
        done = plan.done;
      } else {
        report = snapshot.evict(policy, { keep });
      }
      const t2 = performance.now();
      if (this.#stopped || abort.signal.aborted || seq.freed) return;
      const mid = this.usage();
      native().replacePrefix(seq.native, snapshot.native);
      const t3 = performance.now();
      this.#done = done;
      const after = this.usage();
      this.passes++;
      this.emit('pass', {
        kind: policy instanceof Compactor ? 'compact' : 'evict',
        targetBytes: target,
        bytesBefore: before.bytes,
        rowsBefore: before.rows,
        bytesAfter: after.bytes,
        rowsAfter: after.rows,
        rowsAppendedDuring: mid.rows - before.rows,
        milliseconds: { snapshot: t1 - t0, work: t2 - t1, swap: t3 - t2, total: t3 - t0 },
        report,
      } satisfies MaintenancePass);
    } catch (error) {
      // Stopping, freeing the sequence or disposing the cache ends a pass quietly.
      if (this.#stopped || cache.disposed || seq.freed) return;
      if (error instanceof KVCacheError && error.code === 'ABORTED') {
        this.skips++;
        this.emit('skip', { reason: 'changed', message: error.message } satisfies MaintenanceSkip);
        return;
      }
      this.errors++;
      this.lastError = error;
      // The next attempt waits until the sequence has grown by a block per stream.
      this.#quietUntilRows = before.rows + this.#streams * this.#blockSize;
      try {
        if (this.listenerCount('error') > 0) this.emit('error', error);
      } catch {
        // A listener that throws must not turn the pass into an unhandled rejection.
      }
    } finally {
      this.#running = false;
      this.#abort = undefined;
      if (snapshot && !cache.disposed) {
        try {
          snapshot.free();
        } catch {
          // Still busy only if its compaction had not settled, which the await above excludes.
        }
      }
    }
  }
}
