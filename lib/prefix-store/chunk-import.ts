// A plain prefix imported chunk entry by chunk entry as the entries arrive (the native
// ChunkImport, cpp/core/chunk_import.h): each entry's CRC-32 and rows are checked and its rows
// written to their blocks in one pass, so a load needs neither the joined export bytes nor a
// pass over them after the last byte. The sequence appears in the cache only at finish; an
// import that failed or was abandoned gives its blocks back.
import type { KVCache } from '../kv-cache';
import type { NativeChunkImport } from '../native/binding';
import { Sequence } from '../sequence';

export class ChunkImporter {
  readonly #cache: KVCache;
  readonly #rows: Uint32Array;
  #handle: NativeChunkImport | null = null;
  #closed = false;

  /** rows[j]: rows per stream of chunk j. */
  constructor(cache: KVCache, rows: readonly number[]) {
    this.#cache = cache;
    this.#rows = Uint32Array.from(rows);
  }

  /**
   * Chunk j: the entry `frame`, whose payload (the export prelude of `preludeBytes`, then the
   * rows) starts at payloadAt and whose CRC-32 is its last 4 bytes. The first chunk added
   * takes the blocks of the whole sequence. Throws a KVCacheError (CORRUPT_DATA for damaged
   * bytes), after which the import holds nothing.
   */
  add(j: number, frame: Uint8Array, payloadAt: number, preludeBytes: number): void {
    if (this.#closed) throw new Error('chunk import: closed');
    const native = this.#cache.native;
    try {
      this.#handle ??= native.beginChunkImport(frame.subarray(payloadAt, payloadAt + preludeBytes), this.#rows);
      native.chunkImportAdd(this.#handle, j, frame, payloadAt);
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  /** The imported sequence (every chunk was added). */
  finish(): Sequence {
    if (this.#closed || !this.#handle) throw new Error('chunk import: nothing to finish');
    let sequence: Sequence;
    try {
      sequence = new Sequence(this.#cache, this.#cache.native.chunkImportFinish(this.#handle));
    } catch (e) {
      this.abort();
      throw e;
    }
    this.#closed = true;
    return sequence;
  }

  /** Gives the blocks back (nothing once finished or already aborted). */
  abort(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#handle && !this.#cache.disposed) this.#cache.native.chunkImportAbort(this.#handle);
  }
}
