// The framing of one stored entry: a small header naming what the entry holds, the user's
// metadata and the payload (export bytes or a chunk of rows), then a CRC-32 over all of it.
// A backend's bytes are checked here before anything else looks at them.
import { crc32 } from 'node:zlib';

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

/** Layout: "KVCSTORE" | u32 version | u32 kind | u32 tokens | u32 rows | u32 metaBytes |
 * u32 payloadBytes | meta (UTF-8 JSON) | payload | u32 crc32 of everything before. */
export function encodeEntry(entry: Entry): Uint8Array {
  const meta = Buffer.from(entry.meta === undefined ? '' : JSON.stringify(entry.meta), 'utf8');
  const size = HEADER_BYTES + meta.length + entry.payload.length + 4;
  const out = Buffer.allocUnsafe(size);
  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(FRAME_VERSION, 8);
  out.writeUInt32LE(KIND_CODES[entry.kind], 12);
  out.writeUInt32LE(entry.tokens, 16);
  out.writeUInt32LE(entry.rows, 20);
  out.writeUInt32LE(meta.length, 24);
  out.writeUInt32LE(entry.payload.length, 28);
  meta.copy(out, HEADER_BYTES);
  out.set(entry.payload, HEADER_BYTES + meta.length);
  out.writeUInt32LE(crc32(out.subarray(0, size - 4)), size - 4);
  return out;
}

/** The entry held by `bytes`, or null when they are truncated, damaged or of another version. */
export function decodeEntry(bytes: Uint8Array): Entry | null {
  if (bytes.length < HEADER_BYTES + 4) return null;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.toString('latin1', 0, 8) !== MAGIC || b.readUInt32LE(8) !== FRAME_VERSION) return null;
  const kind = KINDS[b.readUInt32LE(12)];
  const metaBytes = b.readUInt32LE(24);
  const payloadBytes = b.readUInt32LE(28);
  if (kind === undefined || HEADER_BYTES + metaBytes + payloadBytes + 4 !== b.length) return null;
  if (crc32(b.subarray(0, b.length - 4)) !== b.readUInt32LE(b.length - 4)) return null;
  let meta: unknown;
  try {
    meta = metaBytes === 0 ? undefined : JSON.parse(b.toString('utf8', HEADER_BYTES, HEADER_BYTES + metaBytes));
  } catch {
    return null;
  }
  const start = HEADER_BYTES + metaBytes;
  return { kind, tokens: b.readUInt32LE(16), rows: b.readUInt32LE(20), meta, payload: b.subarray(start, start + payloadBytes) };
}
