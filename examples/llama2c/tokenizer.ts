// llama2.c tokenizer (tok512.bin, tokchar.bin and friends): byte-level BPE with scores,
// encoded exactly as llama2.c's run.c does it, so token ids match the reference runner.
// A character-level vocabulary (tokchar.bin: no byte-fallback tokens, no merges) is the
// degenerate case: one token per character.
import { readFileSync } from 'node:fs';

export const BOS = 1;
export const EOS = 2;
/** Byte-fallback tokens `<0x00>`..`<0xFF>` are ids BYTE_FALLBACK_OFFSET + byte. */
export const BYTE_FALLBACK_OFFSET = 3;

export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

export interface EncodeOptions {
  /** prepend BOS (id 1) */
  bos?: boolean;
  /** append EOS (id 2) */
  eos?: boolean;
}

// Pieces are kept as "binary" strings (one char per byte, latin1) so that lookups and
// concatenations work on the raw bytes, as in the C code, whatever the UTF-8 content.
function latin1(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

// llama2.c never merges a pair whose score is not above this.
const MIN_MERGE_SCORE = -1e10;

export class Tokenizer {
  readonly vocabSize: number;
  readonly maxTokenLength: number;
  readonly scores: Float32Array;
  /** raw bytes of each piece, as stored */
  readonly pieces: readonly Uint8Array[];
  private readonly pieceStrings: string[];
  private readonly lookup = new Map<string, number>();
  /** bytes emitted by decode for each id: the byte itself for `<0xXX>` pieces, else the piece */
  private readonly decodeBytes: Uint8Array[];
  /** ids 3..258 are the byte-fallback tokens `<0x00>`..`<0xFF>` */
  readonly byteFallback: boolean;

  constructor(bytes: Uint8Array, options: { vocabSize?: number | undefined; source?: string | undefined } = {}) {
    const source = options.source ?? 'tokenizer';
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.byteLength < 4) throw new TokenizerError(`${source}: file is too short (${bytes.byteLength} bytes)`);
    this.maxTokenLength = dv.getInt32(0, true);
    if (this.maxTokenLength <= 0 || this.maxTokenLength > 1 << 16) {
      throw new TokenizerError(`${source}: max_token_length ${this.maxTokenLength} is out of range`);
    }
    const scores: number[] = [];
    const pieces: Uint8Array[] = [];
    let off = 4;
    while (off < bytes.byteLength && (options.vocabSize === undefined || pieces.length < options.vocabSize)) {
      if (off + 8 > bytes.byteLength) {
        throw new TokenizerError(`${source}: truncated entry for token ${pieces.length} at byte ${off}`);
      }
      const score = dv.getFloat32(off, true);
      const len = dv.getInt32(off + 4, true);
      off += 8;
      if (len < 0 || len > this.maxTokenLength || off + len > bytes.byteLength) {
        throw new TokenizerError(
          `${source}: token ${pieces.length} has invalid length ${len} (max_token_length ${this.maxTokenLength}, ` +
            `${bytes.byteLength - off} bytes left)`,
        );
      }
      scores.push(score);
      pieces.push(bytes.slice(off, off + len));
      off += len;
    }
    if (options.vocabSize !== undefined && pieces.length !== options.vocabSize) {
      throw new TokenizerError(`${source}: holds ${pieces.length} tokens, expected ${options.vocabSize}`);
    }
    if (off !== bytes.byteLength) {
      throw new TokenizerError(`${source}: ${bytes.byteLength - off} trailing bytes after ${pieces.length} tokens`);
    }
    this.vocabSize = pieces.length;
    this.scores = Float32Array.from(scores);
    this.pieces = pieces;
    this.pieceStrings = pieces.map(latin1);
    // First occurrence wins for duplicate pieces.
    this.pieceStrings.forEach((s, id) => {
      if (!this.lookup.has(s)) this.lookup.set(s, id);
    });
    if (!this.lookup.has(' ')) throw new TokenizerError(`${source}: no ' ' token for the dummy prefix`);
    // As in llama2.c, byte fallback is only used for a character missing from the vocabulary,
    // so a vocabulary without `<0xXX>` tokens (e.g. a character-level one) is valid. Where
    // llama2.c would then emit byte + 3 (some unrelated token), encode() reports the character.
    this.byteFallback =
      pieces.length >= BYTE_FALLBACK_OFFSET + 256 &&
      this.pieceStrings
        .slice(BYTE_FALLBACK_OFFSET, BYTE_FALLBACK_OFFSET + 256)
        .every((s, b) => s.toUpperCase() === `<0X${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    this.decodeBytes = this.pieceStrings.map((s, id) => {
      const m = /^<0x([0-9A-Fa-f]{2})>/.exec(s);
      return m ? Uint8Array.of(parseInt(m[1]!, 16)) : pieces[id]!;
    });
  }

  static load(file: string, vocabSize?: number): Tokenizer {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      throw new TokenizerError(`cannot read tokenizer ${file}: ${(err as Error).message}`);
    }
    return new Tokenizer(bytes, { vocabSize, source: file });
  }

  /** id of a piece given as its exact text (UTF-8), or -1 */
  tokenId(piece: string): number {
    return this.lookup.get(latin1(new TextEncoder().encode(piece))) ?? -1;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const utf8 = new TextEncoder().encode(text);
    const ids: number[] = [];
    if (options.bos) ids.push(BOS);
    // BOS never merges ("\n<s>\n" + anything is not a piece), so merging starts after it.
    const start = ids.length;
    // sentencepiece's add_dummy_prefix: a leading space token, for non-empty text only
    if (utf8.length > 0) ids.push(this.lookup.get(' ')!);

    // One token per UTF-8 character, or one byte-fallback token per byte of it.
    let i = 0;
    while (i < utf8.length) {
      let j = i + 1;
      // continuation bytes (10xxxxxx) join the current character, at most 4 bytes in all
      while (j < utf8.length && (utf8[j]! & 0xc0) === 0x80 && j - i < 4) j++;
      const ch = latin1(utf8.subarray(i, j));
      const id = this.lookup.get(ch);
      if (id !== undefined) ids.push(id);
      else if (this.byteFallback) for (let k = i; k < j; k++) ids.push(utf8[k]! + BYTE_FALLBACK_OFFSET);
      else {
        const char = new TextDecoder().decode(utf8.subarray(i, j));
        throw new TokenizerError(
          `character ${JSON.stringify(char)} (byte offset ${i}) is not in the vocabulary, which has no byte-fallback tokens`,
        );
      }
      i = j;
    }

    // Merge the best-scoring adjacent pair (leftmost on ties) until none merges.
    // mergeId[k] / mergeScore[k] cache the pair (k, k+1); only neighbours change after a merge.
    const toks = ids.splice(start);
    const mergeId: number[] = [];
    const mergeScore: number[] = [];
    const pairAt = (k: number): void => {
      const id = this.lookup.get(this.pieceStrings[toks[k]!]! + this.pieceStrings[toks[k + 1]!]!);
      mergeId[k] = id ?? -1;
      mergeScore[k] = id === undefined ? -Infinity : this.scores[id]!;
    };
    for (let k = 0; k + 1 < toks.length; k++) pairAt(k);
    for (;;) {
      let best = MIN_MERGE_SCORE;
      let bestIdx = -1;
      for (let k = 0; k < mergeScore.length; k++) {
        if (mergeScore[k]! > best) {
          best = mergeScore[k]!;
          bestIdx = k;
        }
      }
      if (bestIdx < 0) break;
      toks[bestIdx] = mergeId[bestIdx]!;
      toks.splice(bestIdx + 1, 1);
      mergeId.splice(bestIdx, 1);
      mergeScore.splice(bestIdx, 1);
      if (bestIdx > 0) pairAt(bestIdx - 1);
      if (bestIdx + 1 < toks.length) pairAt(bestIdx);
    }
    ids.push(...toks);
    if (options.eos) ids.push(EOS);
    return ids;
  }

  /**
   * Bytes printed for `token` when it follows `prev` (llama2.c's decode): a piece after
   * BOS drops its leading space; `<0xXX>` pieces are the raw byte. Bytes, not a string,
   * because a byte-fallback token may hold part of a UTF-8 character.
   */
  decodePiece(prev: number, token: number): Uint8Array {
    const bytes = this.decodeBytes[token];
    if (bytes === undefined) throw new TokenizerError(`token id ${token} is outside the vocabulary (0..${this.vocabSize - 1})`);
    if (prev === BOS && bytes.length > 0 && bytes[0] === 0x20 && this.decodeBytes[token] === this.pieces[token]) {
      return bytes.subarray(1);
    }
    return bytes;
  }

  /** decodePiece as text (a lone byte of a multi-byte character decodes to U+FFFD) */
  decode(prev: number, token: number): string {
    return new TextDecoder().decode(this.decodePiece(prev, token));
  }

  /** Text of a token sequence as llama2.c prints it: BOS/EOS are not printed. */
  decodeAll(ids: ArrayLike<number>): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === BOS || id === EOS) continue;
      const piece = this.decodePiece(i > 0 ? ids[i - 1]! : -1, id);
      parts.push(piece);
      total += piece.length;
    }
    const out = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return new TextDecoder().decode(out);
  }
}
