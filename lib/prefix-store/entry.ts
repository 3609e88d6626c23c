// The framing of one stored entry: a small header naming what the entry holds, the user's
// metadata and the payload (export bytes or a chunk of rows), then a CRC-32 over all of it.
// A backend's bytes are checked here before anything else looks at them.
import { native } from '../native/binding';
import { Parts } from './parts';

const MAGIC = 'KVCSTORE';
const FRAME_VERSION = 1;
const HEADER_BYTES = 32;

/** 'chunk': rows of one fixed token chunk of a plain sequence; 'tail': the last, shorter
 * chunk of one; 'whole': a whole evicted or compacted sequence (rows no longer map to tokens). */
export type EntryKind = 'chunk' | 'tail' | 'whole';
const KIND_CODES: Record<EntryKind, number> = { chunk: 1, tail: 2, whole: 3 };
const KINDS: readonly (EntryKind | undefined)[] = [undefined, 'chunk', 'tail', 'whole'];

export interface Entry {
  kind: EntryKind;
  /** Length of the token prefix this entry completes. */
  tokens: number;
  /** Rows per stream of a chunk or tail payload (0 for whole entries). */
  rows: number;
  meta: unknown;
  payload: Uint8Array;
}

/** An entry as read back: its payload may span the parts it was read in. */
export interface StoredEntry extends Omit<Entry, 'payload'> {
  payload: Parts;
}

/** Layout: "KVCSTORE" | u32 version | u32 kind | u32 tokens | u32 rows | u32 metaBytes |
 * u32 payloadBytes | meta (UTF-8 JSON) | payload | u32 crc32 of everything before. */
export function encodeEntry(entry: Entry): Uint8Array {
  const meta = Buffer.from(entry.meta === undefined ? '' : JSON.stringify(entry.meta), 'utf8');
  const size = HEADER_BYTES + meta.length + entry.payload.length + 4;
  const out = Buffer.allocUnsafeSlow(size);
  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(FRAME_VERSION, 8);
  out.writeUInt32LE(KIND_CODES[entry.kind], 12);
  out.writeUInt32LE(entry.tokens, 16);
  out.writeUInt32LE(entry.rows, 20);
  out.writeUInt32LE(meta.length, 24);
  out.writeUInt32LE(entry.payload.length, 28);
  meta.copy(out, HEADER_BYTES);
  out.set(entry.payload, HEADER_BYTES + meta.length);
  out.writeUInt32LE(native().crc32(out.subarray(0, size - 4), 0), size - 4);
  return out;
}

/** Where an entry's parts lie, read from its framing alone (the CRC is not checked). */
export interface EntryFrame extends Omit<Entry, 'payload'> {
  payloadAt: number;
  payloadBytes: number;
}

/** The framing of `bytes` (length `size`) from its first HEADER_BYTES, or null when it cannot be an entry. */
function readFrame(head: Uint8Array, size: number, metaOf: (at: number, n: number) => Uint8Array): EntryFrame | null {
  if (size < HEADER_BYTES + 4 || head.length < HEADER_BYTES) return null;
  const h = Buffer.from(head.buffer, head.byteOffset, HEADER_BYTES);
  if (h.toString('latin1', 0, 8) !== MAGIC || h.readUInt32LE(8) !== FRAME_VERSION) return null;
  const kind = KINDS[h.readUInt32LE(12)];
  const metaBytes = h.readUInt32LE(24);
  const payloadBytes = h.readUInt32LE(28);
  if (kind === undefined || HEADER_BYTES + metaBytes + payloadBytes + 4 !== size) return null;
  let meta: unknown;
  try {
    meta = metaBytes === 0 ? undefined : JSON.parse(Buffer.from(metaOf(HEADER_BYTES, metaBytes)).toString('utf8'));
  } catch {
    return null;
  }
  return { kind, tokens: h.readUInt32LE(16), rows: h.readUInt32LE(20), meta, payloadAt: HEADER_BYTES + metaBytes, payloadBytes };
}

/**
 * The framing of an entry in one buffer, without checking its CRC: for a reader that checks
 * the CRC itself in its pass over the payload (the chunk import). Nothing read here may be
 * trusted before that check passed.
 */
export function readEntryFrame(bytes: Uint8Array): EntryFrame | null {
  return readFrame(bytes.subarray(0, HEADER_BYTES), bytes.length, (at, n) => bytes.subarray(at, at + n));
}

/** The entry held by `bytes`, or null when they are truncated, damaged or of another version. */
export function decodeEntry(bytes: Uint8Array | Parts): StoredEntry | null {
  const b = Parts.of(bytes);
  if (b.length < HEADER_BYTES + 4) return null;
  if (b.crc32(0, b.length - 4) !== b.u32(b.length - 4)) return null;
  const frame = readFrame(b.bytes(0, HEADER_BYTES), b.length, (at, n) => b.bytes(at, n));
  if (!frame) return null;
  const { payloadAt, payloadBytes, ...entry } = frame;
  return { ...entry, payload: b.slice(payloadAt, payloadAt + payloadBytes) };
}
