// Bytes held as a list of buffers (a value read in bounded parts), read and checked in place:
// a multi-part entry is verified and its rows copied to their final place without first
// being joined into one buffer.
import { native } from '../native/binding';

export class Parts {
  readonly length: number;
  /** Start of each part within the whole. */
  readonly #starts: number[];

  constructor(
    readonly parts: readonly Uint8Array[],
    /** This view's first byte within the whole and its length. */
    readonly offset = 0,
    length?: number,
  ) {
    this.#starts = [];
    let at = 0;
    for (const p of parts) {
      this.#starts.push(at);
      at += p.length;
    }
    this.length = length ?? at - offset;
  }

  static of(bytes: Uint8Array | Parts): Parts {
    return bytes instanceof Parts ? bytes : new Parts([bytes]);
  }

  /** A view of bytes [start, end) of this one (no copy). */
  slice(start: number, end: number): Parts {
    return new Parts(this.parts, this.offset + start, end - start);
  }

  /** Calls fn with where bytes [from, from + size) lie, part by part in order: (part, start in it, length). */
  pieces(from: number, size: number, fn: (part: Uint8Array, start: number, size: number) => void): void {
    let at = this.offset + from;
    let left = size;
    let i = this.#find(at);
    while (left > 0) {
      const p = this.parts[i]!;
      const start = at - this.#starts[i]!;
      const n = Math.min(left, p.length - start);
      fn(p, start, n);
      at += n;
      left -= n;
      i++;
    }
  }

  #each(from: number, size: number, fn: (piece: Uint8Array) => void): void {
    this.pieces(from, size, (p, start, n) => fn(p.subarray(start, start + n)));
  }

  #find(at: number): number {
    let lo = 0;
    let hi = this.parts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#starts[mid]! <= at) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Copies bytes [from, from + size) into out at `at`. */
  copy(from: number, size: number, out: Uint8Array, at: number): void {
    this.#each(from, size, (piece) => {
      out.set(piece, at);
      at += piece.length;
    });
  }

  /** CRC-32 of bytes [from, from + size). */
  crc32(from: number, size: number): number {
    let crc = 0;
    this.#each(from, size, (piece) => {
      crc = native().crc32(piece, crc);
    });
    return crc;
  }

  bytes(from: number, size: number): Uint8Array {
    if (size === 0) return new Uint8Array(0);
    const i = this.#find(this.offset + from);
    const start = this.offset + from - this.#starts[i]!;
    if (start + size <= this.parts[i]!.length) return this.parts[i]!.subarray(start, start + size);
    const out = new Uint8Array(size);
    this.copy(from, size, out, 0);
    return out;
  }

  u32(at: number): number {
    const b = this.bytes(at, 4);
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  }

  /** The bytes as one buffer (a copy only when they span parts). */
  contiguous(): Uint8Array {
    return this.bytes(0, this.length);
  }
}
