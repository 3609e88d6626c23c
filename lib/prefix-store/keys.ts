// Content-addressed keys. Everything that makes stored bytes usable by a cache goes into a
// fingerprint (the model's identity, the head shapes, storage formats, group size, rotation
// and its seed, RoPE and low-rank settings, the export format and chunk size); token ids are hashed on top of it as a
// chain over fixed chunks, so that every chunk boundary of a prefix has its own key and a
// prefix of a stored prefix is found too. An incompatible cache computes other keys: it can
// never be handed bytes it cannot use.
import * as crypto from 'node:crypto';

import type { KVCacheConfig } from '../types';
import { EXPORT_VERSION } from './export-layout';

const DIGEST_HEX = 32; // 128 bits of SHA-256: no accidental collision among any number of entries a store can hold

/** crypto.hash (Node 20.12+): a one-shot digest without a Hash object, a few microseconds less per chunk. */
const oneShot = (crypto as { hash?: (algorithm: string, data: Uint8Array, encoding: 'hex') => string }).hash;

function digest(...parts: (string | Uint8Array)[]): string {
  if (oneShot) {
    // The same bytes as the updates below, joined: the same digest.
    const buffers = parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p));
    return oneShot('sha256', buffers.length === 1 ? buffers[0]! : Buffer.concat(buffers), 'hex').slice(0, DIGEST_HEX);
  }
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex').slice(0, DIGEST_HEX);
}

/** The fingerprint of (model, byte-compatible cache configuration, chunk size). */
export function fingerprint(model: string, c: KVCacheConfig, chunkTokens: number): string {
  return digest(
    JSON.stringify({
      model,
      format: EXPORT_VERSION,
      chunkTokens,
      layers: c.layers,
      kvHeads: c.kvHeads,
      headDim: c.headDim,
      queryHeads: c.queryHeads,
      keys: c.keys,
      values: c.values,
      groupSize: c.groupSize,
      rotateKeys: c.rotateKeys,
      rotateValues: c.rotateValues,
      rotationSeed: c.rotationSeed,
      // Keys stored before RoPE, and low-rank coefficient rows (key and value ranks), are other
      // bytes for the same tokens.
      rope: c.rope,
      lowRank: c.lowRank,
      // Tiered exports (version 4) import only into a cache of the same tier list; absent for
      // other caches, so that their keys stay what they were.
      tiers: c.tiers ?? undefined,
    }),
  );
}

function tokenBytes(tokens: Uint32Array, from: number, to: number): Uint8Array {
  return new Uint8Array(tokens.buffer, tokens.byteOffset + 4 * from, 4 * (to - from));
}

/** chain[0] = fingerprint; chain[k] = H(chain[k-1], tokens of chunk k) for the full chunks. */
export function chainHashes(print: string, tokens: Uint32Array, chunkTokens: number): string[] {
  const chunks = Math.floor(tokens.length / chunkTokens);
  const chain = [print];
  for (let k = 1; k <= chunks; k++) chain.push(digest(chain[k - 1]!, tokenBytes(tokens, (k - 1) * chunkTokens, k * chunkTokens)));
  return chain;
}

/** Key of the entry holding chunk k (k ≥ 1) of a plain sequence. */
export function chunkKey(chain: readonly string[], k: number): string {
  return 'c' + chain[k]!;
}

/**
 * Key of a tail ('t') or whole ('w') entry for the first `length` tokens: the chain hash at the
 * last full chunk boundary before it and the remaining tokens.
 */
export function prefixKey(kind: 't' | 'w', chain: readonly string[], tokens: Uint32Array, length: number, chunkTokens: number): string {
  const k = Math.floor(length / chunkTokens);
  return kind + digest(chain[k]!, tokenBytes(tokens, k * chunkTokens, length), String(length));
}

/** Set naming the lengths of tail and whole entries that start at chunk boundary k. */
export function markerKey(chain: readonly string[], k: number): string {
  return 'm' + chain[k]!;
}
