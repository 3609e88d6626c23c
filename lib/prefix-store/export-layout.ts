// Reads the byte layout of Sequence.export() (docs/kvc-format.md) in TypeScript, splits
// a plain sequence's export into per-chunk row ranges and joins such ranges back into an
// export that KVCache.importSequence accepts. Never interprets row contents beyond positions.
import { native } from '../native/binding';
import { Crc32Combiner } from './crc32-combine';
import { Parts } from './parts';

/** Bytes of the fixed header: magic (8), version, header size, 11 config fields (u32 each). */
export const EXPORT_HEADER_BYTES = 60;
export const EXPORT_MAGIC = 'KVCSEQ01';
/** The version a cache without `rope` writes (2: a low-rank section after the header). */
export const EXPORT_VERSION = 2;
/** The version a cache with `rope` writes (3: version 2 with the rope fields in the header). */
export const ROPE_EXPORT_VERSION = 3;
/** The version a cache with `tiers` writes (4: rows per tier, each tier's rows in its formats); kept whole. */
export const TIERED_EXPORT_VERSION = 4;
/** The version a lowRank cache with unequal key and value ranks writes (5: both ranks, rope fields always); kept whole. */
export const LOW_RANK_RANKS_EXPORT_VERSION = 5;
const ROPE_FIELDS_BYTES = 16;

/**
 * Bytes before the tables (header, rope fields, low-rank rank) of an export whose streams hold
 * plain rows, or -1 for an unknown layout or a low-rank export (its bases and calibration rows
 * come before the tables: such bytes are stored whole, never split into chunks).
 */
export function preludeBytes(head: Uint8Array): number {
  if (head.length < EXPORT_HEADER_BYTES) return -1;
  const version = u32(head, 8);
  const header = u32(head, 12);
  if (version === 1) return header === EXPORT_HEADER_BYTES ? EXPORT_HEADER_BYTES : -1;
  const expected = version === EXPORT_VERSION ? EXPORT_HEADER_BYTES : version === ROPE_EXPORT_VERSION ? EXPORT_HEADER_BYTES + ROPE_FIELDS_BYTES : -1;
  if (expected < 0 || header !== expected || head.length < header + 4) return -1;
  return u32(head, header) === 0 ? header + 4 : -1;
}

export interface ExportLayout {
  layers: number;
  kvHeads: number;
  keyRowBytes: number;
  valueRowBytes: number;
  /** Rows of each stream, layer-major (index layer × kvHeads + kvHead). */
  lengths: Int32Array;
  nextPositions: Int32Array;
  /** Byte offset of each stream's rows (keys, values, beta, positions in turn). */
  streamOffsets: Float64Array;
  /** Bytes before the tables (copied into every chunk). */
  prelude: number;
}

function u32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

function i32Array(bytes: Uint8Array, at: number, count: number): Int32Array {
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) out[i] = u32(bytes, at + 4 * i) | 0;
  return out;
}

/**
 * The tables of an export of plain rows, or null when the bytes are not a well-formed export
 * this reader can split (an unknown version, or low-rank streams: see preludeBytes).
 */
export function readExportLayout(bytes: Uint8Array): ExportLayout | null {
  if (bytes.length < EXPORT_HEADER_BYTES + 4) return null;
  for (let i = 0; i < 8; i++) if (bytes[i] !== EXPORT_MAGIC.charCodeAt(i)) return null;
  const prelude = preludeBytes(bytes);
  if (prelude < 0) return null;
  const layers = u32(bytes, 16);
  const kvHeads = u32(bytes, 20);
  const keyRowBytes = u32(bytes, 52);
  const valueRowBytes = u32(bytes, 56);
  const streams = layers * kvHeads;
  const tables = prelude + 4 * (layers + streams);
  if (tables + 4 > bytes.length) return null;
  const nextPositions = i32Array(bytes, prelude, layers);
  const lengths = i32Array(bytes, prelude + 4 * layers, streams);
  const streamOffsets = new Float64Array(streams);
  const perRow = keyRowBytes + valueRowBytes + 8;
  let at = tables;
  for (let s = 0; s < streams; s++) {
    if (lengths[s]! < 0) return null;
    streamOffsets[s] = at;
    at += perRow * lengths[s]!;
  }
  if (at + 4 !== bytes.length) return null;
  return { layers, kvHeads, keyRowBytes, valueRowBytes, lengths, nextPositions, streamOffsets, prelude };
}

/**
 * True when every stream holds exactly `tokens` rows at positions 0, 1, ..., tokens - 1 and
 * every layer continues at `tokens`: a sequence whose rows still map one to one onto its
 * tokens, so any prefix of it is the same rows cut short (what chunked entries rely on).
 */
export function isPlainPrefix(bytes: Uint8Array, layout: ExportLayout, tokens: number): boolean {
  if (layout.lengths.some((n) => n !== tokens) || layout.nextPositions.some((p) => p !== tokens)) return false;
  const rowBytes = layout.keyRowBytes + layout.valueRowBytes;
  const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  for (let s = 0; s < layout.lengths.length; s++) {
    const positionsAt = layout.streamOffsets[s]! + tokens * (rowBytes + 4);
    if (little && (bytes.byteOffset + positionsAt) % 4 === 0) {
      // Row sizes are multiples of 4, so positions are aligned whenever the buffer is: read them in place.
      const positions = new Int32Array(bytes.buffer, bytes.byteOffset + positionsAt, tokens);
      for (let i = 0; i < tokens; i++) if (positions[i] !== i) return false;
    } else {
      for (let i = 0; i < tokens; i++) if (u32(bytes, positionsAt + 4 * i) !== i) return false;
    }
  }
  return true;
}

/**
 * Rows [start, start + rows) of every stream of a plain export as one chunk payload:
 * the export's prelude (header, rope fields, rank), then per stream keys | values | beta |
 * positions of those rows.
 */
export function chunkPayload(bytes: Uint8Array, layout: ExportLayout, start: number, rows: number): Uint8Array {
  const { keyRowBytes: kb, valueRowBytes: vb, prelude } = layout;
  const streams = layout.lengths.length;
  const out = new Uint8Array(prelude + streams * rows * (kb + vb + 8));
  out.set(bytes.subarray(0, prelude), 0);
  let at = prelude;
  for (let s = 0; s < streams; s++) {
    const n = layout.lengths[s]!;
    const base = layout.streamOffsets[s]!;
    const parts: Array<[number, number]> = [
      [base + start * kb, rows * kb],
      [base + n * kb + start * vb, rows * vb],
      [base + n * (kb + vb) + 4 * start, 4 * rows],
      [base + n * (kb + vb + 4) + 4 * start, 4 * rows],
    ];
    for (const [from, size] of parts) {
      out.set(bytes.subarray(from, from + size), at);
      at += size;
    }
  }
  return out;
}

/**
 * Joins chunk payloads (consecutive row ranges of one plain sequence) into export bytes, one
 * chunk at a time in any order: each is copied to its final place and checksummed piece by
 * piece as soon as it is added (so a load places the chunks that arrived while later ones
 * are still on the way), and the export's checksum is combined from the pieces' at the end.
 */
export class ChunkJoin {
  readonly #rows: readonly number[];
  /** First row of each chunk in the joined streams. */
  readonly #starts: number[];
  readonly #total: number;
  readonly #allocate: (bytes: number) => Uint8Array;
  readonly #added: boolean[];
  #head: Uint8Array | null = null;
  #shape = { layers: 0, streams: 0, kb: 0, vb: 0, tables: 0 };
  #out: Uint8Array | null = null;
  /** CRC-32 of each piece placed: (stream, keys | values | beta | positions, chunk), in output order. */
  #crcs = new Uint32Array(0);
  #misfit = false;

  constructor(
    rows: readonly number[],
    /** Where the joined bytes go (default: a new buffer), given their size. */
    allocate: (bytes: number) => Uint8Array = (bytes) => Buffer.allocUnsafeSlow(bytes),
  ) {
    this.#rows = rows;
    let at = 0;
    this.#starts = rows.map((r) => ((at += r), at - r));
    this.#total = at;
    this.#allocate = allocate;
    this.#added = rows.map(() => false);
  }

  /** Places chunk j; false (and finish() gives null) when it does not fit the others. */
  add(j: number, chunk: Uint8Array | Parts): boolean {
    const p = Parts.of(chunk);
    if (this.#misfit || this.#added[j] !== false || !this.#begin(p, j)) return this.#reject();
    const head = this.#head!;
    const { streams, kb, vb, tables } = this.#shape;
    const r = this.#rows[j]!;
    if (p.length !== head.length + streams * r * (kb + vb + 8)) return this.#reject();
    const h = p.bytes(0, head.length);
    for (let i = 0; i < head.length; i++) if (h[i] !== head[i]) return this.#reject();
    // Per stream: keys, values, beta and positions of the chunk's rows, each to its place in
    // the joined stream (which holds all chunks' keys, then all values, ...), copied and
    // checksummed in one native pass; finish() combines the pieces' CRCs in output order.
    const out = this.#out!;
    const total = this.#total;
    const start = this.#starts[j]!;
    const chunks = this.#rows.length;
    const widths = [kb, vb, 4, 4];
    const plan: number[] = [];
    let from = head.length;
    for (let s = 0; s < streams; s++) {
      let region = tables + s * total * (kb + vb + 8);
      for (let q = 0; q < 4; q++) {
        const size = r * widths[q]!;
        plan.length = 0;
        p.pieces(from, size, (part, at, n) => plan.push(p.parts.indexOf(part), at, n));
        const to = region + start * widths[q]!;
        this.#crcs[(4 * s + q) * chunks + j] = native().gatherCrc32(p.parts, Float64Array.from(plan), out.subarray(to, to + size));
        from += size;
        region += total * widths[q]!;
      }
    }
    this.#added[j] = true;
    return true;
  }

  /** The export bytes (checksum included), or null when a chunk is missing or did not fit. */
  finish(): Uint8Array | null {
    if (this.#misfit || !this.#out || this.#added.some((a) => !a)) return null;
    const out = this.#out;
    const size = out.length - 4;
    const { streams, kb, vb, tables } = this.#shape;
    const crc = new Crc32Combiner();
    crc.append(native().crc32(out.subarray(0, tables), 0), tables);
    const widths = [kb, vb, 4, 4];
    const chunks = this.#rows.length;
    for (let s = 0; s < streams; s++) {
      for (let q = 0; q < 4; q++) {
        for (let j = 0; j < chunks; j++) crc.append(this.#crcs[(4 * s + q) * chunks + j]!, this.#rows[j]! * widths[q]!);
      }
    }
    new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(size, crc.crc, true);
    return out;
  }

  #reject(): false {
    this.#misfit = true;
    return false;
  }

  /** Reads the prelude of the first chunk added (j) and lays out the joined bytes. */
  #begin(p: Parts, j: number): boolean {
    if (this.#head) return true;
    if (p.length < EXPORT_HEADER_BYTES) return false;
    const prelude = preludeBytes(p.bytes(0, Math.min(p.length, EXPORT_HEADER_BYTES + ROPE_FIELDS_BYTES + 4)));
    if (prelude < 0) return false;
    const head = Uint8Array.from(p.bytes(0, prelude));
    const layers = u32(head, 16);
    const streams = layers * u32(head, 20);
    const kb = u32(head, 52);
    const vb = u32(head, 56);
    const tables = prelude + 4 * (layers + streams);
    const size = tables + streams * this.#total * (kb + vb + 8);
    // Nothing is allocated for a header its own chunk's size contradicts.
    if (p.length !== prelude + streams * this.#rows[j]! * (kb + vb + 8)) return false;
    // Every byte is written (the tables here, the rows by add): no need to zero the buffer.
    const out = this.#allocate(size + 4);
    out.set(head, 0);
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    for (let i = 0; i < layers + streams; i++) view.setInt32(prelude + 4 * i, this.#total, true);
    this.#head = head;
    this.#shape = { layers, streams, kb, vb, tables };
    this.#crcs = new Uint32Array(4 * streams * this.#rows.length);
    this.#out = out;
    return true;
  }
}

/**
 * Joins chunk payloads (consecutive row ranges of one plain sequence, in order) into export
 * bytes with a fresh checksum. Returns null when the payloads do not fit together (different
 * headers or sizes that disagree with `rows`).
 */
export function joinChunks(
  chunks: readonly (Uint8Array | Parts)[],
  rows: readonly number[],
  allocate?: (bytes: number) => Uint8Array,
): Uint8Array | null {
  if (chunks.length !== rows.length) return null;
  const join = new ChunkJoin(rows, allocate);
  return chunks.every((c, j) => join.add(j, c)) ? join.finish() : null;
}
