// The entries of one load, checked and placed one by one as they arrive: each entry's CRC
// and kind are verified and a plain prefix's chunks are copied into the export bytes while
// later entries are still on the way, so that after the last byte only the export's
// checksum and the import remain. Nothing reaches the cache from here: the result is
// bytes for KVCache.importSequence, or which entries were damaged.
import { decodeEntry } from './entry';
import { ChunkJoin } from './export-layout';
import type { Parts } from './parts';
import type { Plan } from './plan';

export type Received =
  | { bytes: Uint8Array; meta: unknown }
  /** An entry gone since the lookup (expired, evicted, deleted): a plain miss. */
  | { gone: true }
  /** Entries that failed their checks, or chunks that do not fit together. */
  | { damaged: string[]; why: string };

export class EntryReceiver {
  readonly #plan: Plan;
  readonly #chunkTokens: number;
  readonly #join: ChunkJoin | null;
  readonly #taken: boolean[];
  readonly #damaged: number[] = [];
  #gone = false;
  #whole: Uint8Array | null = null;
  #meta: unknown;

  constructor(plan: Plan, chunkTokens: number, allocate: (bytes: number) => Uint8Array) {
    this.#plan = plan;
    this.#chunkTokens = chunkTokens;
    this.#join = plan.kind === 'plain' ? new ChunkJoin(plan.rows, allocate) : null;
    this.#taken = plan.keys.map(() => false);
  }

  /** Entry i of the plan's keys (null: absent). Each index is taken once; later calls are ignored. */
  take(i: number, value: Uint8Array | Parts | null): void {
    if (this.#taken[i] !== false) return;
    this.#taken[i] = true;
    if (value === null) return void (this.#gone = true);
    const e = decodeEntry(value);
    const plan = this.#plan;
    const last = i === plan.keys.length - 1;
    const fits = e !== null && (plan.kind === 'compacted'
      ? e.kind === 'whole' && e.tokens === plan.length
      : e.rows === plan.rows[i] && e.kind === (last && plan.length % this.#chunkTokens !== 0 ? 'tail' : 'chunk'));
    if (!fits) return void this.#damaged.push(i);
    if (last) this.#meta = e.meta;
    if (this.#join) this.#join.add(i, e.payload);
    else this.#whole = e.payload.contiguous();
  }

  /** What the entries make, once every one was taken. */
  finish(): Received {
    if (this.#gone || this.#taken.some((t) => !t)) return { gone: true };
    const keys = this.#plan.keys;
    if (this.#damaged.length > 0) {
      const n = this.#damaged.length;
      return { damaged: this.#damaged.map((i) => keys[i]!), why: `${n} damaged entr${n === 1 ? 'y' : 'ies'}` };
    }
    const bytes = this.#join ? this.#join.finish() : this.#whole;
    return bytes ? { bytes, meta: this.#meta } : { damaged: [...keys], why: 'chunks that do not fit together' };
  }
}
