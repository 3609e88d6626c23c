// The entries of one load, checked and placed one by one as they arrive. A plain prefix's
// chunk entries go straight into the cache through an incremental import (each entry's CRC,
// its rows checked and written to their blocks in one native pass; the sequence appears only
// once every entry passed), so after the last byte almost nothing is left. Without a cache
// (or for a whole entry) the result is export bytes for KVCache.importSequence. A damaged
// entry is reported, never imported.
import { KVCacheError } from '../errors';
import type { KVCache } from '../kv-cache';
import type { Sequence } from '../sequence';
import { ChunkImporter } from './chunk-import';
import { decodeEntry, readEntryFrame } from './entry';
import { ChunkJoin, EXPORT_HEADER_BYTES, preludeBytes } from './export-layout';
import { Parts } from './parts';
import type { Plan } from './plan';

export type Received =
  | { bytes: Uint8Array; meta: unknown }
  /** A plain prefix imported entry by entry; `bytes`: the size of its export. */
  | { sequence: Sequence; bytes: number; meta: unknown }
  /** An entry gone since the lookup (expired, evicted, deleted): a plain miss. */
  | { gone: true }
  /** Entries that failed their checks, or chunks that do not fit together. */
  | { damaged: string[]; why: string };

/** Import errors that mean the stored bytes are wrong (never useful: deleted), not misuse. */
const DAMAGE_CODES = new Set(['CORRUPT_DATA', 'SHAPE_MISMATCH', 'INVALID_ARGUMENT']);

export class EntryReceiver {
  readonly #plan: Plan;
  readonly #chunkTokens: number;
  readonly #join: ChunkJoin | null;
  readonly #import: ChunkImporter | null;
  readonly #taken: boolean[];
  readonly #damaged: number[] = [];
  #why = '';
  #gone = false;
  #closed = false;
  #whole: Uint8Array | null = null;
  #exportBytes = 0;
  #meta: unknown;

  /** With `cache`, a plain prefix is imported into it as its entries arrive. */
  constructor(plan: Plan, chunkTokens: number, allocate: (bytes: number) => Uint8Array, cache?: KVCache) {
    this.#plan = plan;
    this.#chunkTokens = chunkTokens;
    this.#import = plan.kind === 'plain' && cache ? new ChunkImporter(cache, plan.rows) : null;
    this.#join = plan.kind === 'plain' && !cache ? new ChunkJoin(plan.rows, allocate) : null;
    this.#taken = plan.keys.map(() => false);
  }

  /** Entry i of the plan's keys (null: absent). Each index is taken once; later calls are ignored. */
  take(i: number, value: Uint8Array | Parts | null): void {
    if (this.#closed || this.#taken[i] !== false) return;
    this.#taken[i] = true;
    if (value === null) return void (this.#gone = true);
    const plan = this.#plan;
    const last = i === plan.keys.length - 1;
    const chunkKind = last && plan.length % this.#chunkTokens !== 0 ? 'tail' : 'chunk';
    if (this.#import && this.#damaged.length === 0) return this.#importChunk(i, value, last, chunkKind);
    // Without an import (or after it failed: the entries still to come are only checked, so
    // that every damaged one is found and deleted).
    const e = decodeEntry(value);
    const fits = e !== null && (plan.kind === 'compacted'
      ? e.kind === 'whole' && e.tokens === plan.length
      : e.rows === plan.rows[i] && e.kind === chunkKind);
    if (!fits) return void this.#damaged.push(i);
    if (last) this.#meta = e.meta;
    if (this.#join) this.#join.add(i, e.payload);
    else if (!this.#import) this.#whole = e.payload.contiguous();
  }

  #importChunk(i: number, value: Uint8Array | Parts, last: boolean, kind: 'chunk' | 'tail'): void {
    const bytes = value instanceof Parts ? value.contiguous() : value;
    const f = readEntryFrame(bytes);
    const prelude = f && f.rows === this.#plan.rows[i] && f.kind === kind ? preludeBytes(bytes.subarray(f.payloadAt, f.payloadAt + f.payloadBytes)) : -1;
    if (!f || prelude < 0) return this.#fail(i, 'a damaged entry');
    try {
      this.#import!.add(i, bytes, f.payloadAt, prelude);
    } catch (e) {
      if (e instanceof KVCacheError && DAMAGE_CODES.has(e.code)) return this.#fail(i, e.message);
      throw e;
    }
    if (this.#exportBytes === 0) {
      const head = bytes.subarray(f.payloadAt, f.payloadAt + EXPORT_HEADER_BYTES);
      const u32 = (at: number) => Buffer.from(head.buffer, head.byteOffset + at, 4).readUInt32LE(0);
      const layers = u32(16);
      const streams = layers * u32(20);
      this.#exportBytes = prelude + 4 * (layers + streams) + streams * this.#plan.length * (u32(52) + u32(56) + 8) + 4;
    }
    if (last) this.#meta = f.meta;
  }

  #fail(i: number, why: string): void {
    this.#damaged.push(i);
    this.#why ||= why;
    this.#import?.abort();
  }

  /** What the entries make, once every one was taken. */
  finish(): Received {
    if (this.#gone || this.#taken.some((t) => !t)) {
      this.abort();
      return { gone: true };
    }
    const keys = this.#plan.keys;
    if (this.#damaged.length > 0) {
      this.abort();
      const n = this.#damaged.length;
      const why = `${n} damaged entr${n === 1 ? 'y' : 'ies'}${this.#why ? ` (${this.#why})` : ''}`;
      return { damaged: this.#damaged.map((i) => keys[i]!), why };
    }
    if (this.#import) {
      this.#closed = true;
      return { sequence: this.#import.finish(), bytes: this.#exportBytes, meta: this.#meta };
    }
    const bytes = this.#join ? this.#join.finish() : this.#whole;
    return bytes ? { bytes, meta: this.#meta } : { damaged: [...keys], why: 'chunks that do not fit together' };
  }

  /** Ends the load early: an import in progress gives its blocks back; later entries are ignored. */
  abort(): void {
    this.#closed = true;
    this.#import?.abort();
  }
}
