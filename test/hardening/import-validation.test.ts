// importSequence validates, not just checksums: bytes with a valid CRC (recomputed here after
// tampering) but impossible contents fail with CORRUPT_DATA, fast and before any large
// allocation, and leave the cache unchanged. Export layout (cpp/core/serialize.cpp):
//   [0, 60) header | u32 low-rank rank (0 here: version 2) | i32 nextPosition[layers] | i32 length[layers * kvHeads]
//   per stream: keyRows[len] | valueRows[len] | f32 beta[len] | i32 positions[len] | u32 crc
import { describe, expect, it } from 'vitest';
import { KVCache, KVCacheError, type Sequence } from '../../lib/index';
import { expectKVError } from '../foundation/helpers';
import { randn, testRng } from '../reference/random';

const HEADER = 64; // the 60-byte header and the version-2 rank field

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A copy of `bytes` changed by `edit`, with the checksum made valid again. */
function tamper(bytes: Uint8Array, edit: (v: DataView) => void): Uint8Array {
  const out = new Uint8Array(bytes);
  const view = new DataView(out.buffer);
  edit(view);
  view.setUint32(out.length - 4, crc32(out.subarray(0, out.length - 4)), true);
  return out;
}

interface Layout { layers: number; streams: number; lengths: number[]; keyRowBytes: number; valueRowBytes: number }

/** Byte offsets of one stream's parts in an export. */
function streamOffsets(l: Layout, stream: number): { keys: number; values: number; beta: number; positions: number } {
  const perRow = l.keyRowBytes + l.valueRowBytes + 8;
  let at = HEADER + 4 * l.layers + 4 * l.streams;
  for (let i = 0; i < stream; i++) at += l.lengths[i]! * perRow;
  const n = l.lengths[stream]!;
  return { keys: at, values: at + n * l.keyRowBytes, beta: at + n * (l.keyRowBytes + l.valueRowBytes), positions: at + n * (l.keyRowBytes + l.valueRowBytes + 4) };
}

function expectCorrupt(cache: KVCache, bytes: Uint8Array, label: string): void {
  const before = JSON.stringify(cache.stats());
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  const err = expectKVError(() => cache.importSequence(bytes), 'CORRUPT_DATA', label);
  const ms = performance.now() - t0;
  const grew = process.memoryUsage().rss - rss0;
  expect(ms, `${label}: fails fast (${err.message})`).toBeLessThan(200);
  expect(grew, `${label}: no large allocation`).toBeLessThan(64 << 20);
  expect(JSON.stringify(cache.stats()), `${label}: cache unchanged`).toBe(before);
}

function filled(cache: KVCache, tokens: number[], positions?: number[][]): Sequence {
  const rng = testRng();
  const seq = cache.createSequence();
  const { kvHeads, headDim } = cache.config;
  tokens.forEach((t, layer) => {
    if (t === 0) return;
    const n = t * kvHeads * headDim;
    seq.append(layer, randn(rng, n, 1), randn(rng, n, 1), positions?.[layer] ? { positions: positions[layer]! } : undefined);
  });
  return seq;
}

describe('importSequence validates what the checksum cannot', () => {
  it('the test CRC is the export CRC', () => {
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, threads: 1 });
    const bytes = filled(cache, [3]).export();
    expect(crc32(bytes.subarray(0, bytes.length - 4))).toBe(new DataView(bytes.buffer, bytes.byteOffset).getUint32(bytes.length - 4, true));
    expect(cache.importSequence(tamper(bytes, () => {})).length(0, 0), 'an untouched re-checksum imports').toBe(3);
  });

  it('huge stream lengths (one, all, wrapping sums) fail fast with CORRUPT_DATA', () => {
    // 16384 streams with blockSize 1: 2^31 - 1 rows each would be 2^45 rows and, in 32 bits,
    // a block count that wraps around.
    const layers = 256, kvHeads = 64;
    const cache = new KVCache({ layers, kvHeads, headDim: 2, keys: 'f32', values: 'f32', blockSize: 1, threads: 1, maxBytes: 64 << 20 });
    const bytes = filled(cache, [2, 1]).export();
    const streams = layers * kvHeads;
    const lengthAt = (s: number): number => HEADER + 4 * layers + 4 * s;
    expectCorrupt(cache, tamper(bytes, (v) => v.setInt32(lengthAt(5), 0x7fffffff, true)), 'one stream of 2^31 - 1 rows');
    expectCorrupt(cache, tamper(bytes, (v) => { for (let s = 0; s < streams; s++) v.setInt32(lengthAt(s), 0x7fffffff, true); }), 'every stream 2^31 - 1 rows');
    // Lengths whose 32-bit block count wraps to 3 (what the rows present would need) while
    // each is below 2^31: 2 * 2^31 - 2 + ... rows; the per-stream bound rejects the first.
    expectCorrupt(cache, tamper(bytes, (v) => {
      v.setInt32(lengthAt(0), 0x7fffffff, true);
      v.setInt32(lengthAt(1), 0x7fffffff, true);
      v.setInt32(lengthAt(2), 5, true);
    }), 'block count wrapping around 2^32');
    expectCorrupt(cache, tamper(bytes, (v) => v.setInt32(lengthAt(7), -1, true)), 'negative length');
    // The untouched bytes, re-checksummed, import (the checks reject only what is wrong).
    expect(cache.importSequence(tamper(bytes, () => {})).length(0, 0)).toBe(2);
  });

  it('the wrap-around that crashed the old parser: 2^22 streams x 2^30 rows of 4096 bytes, no rows present', () => {
    // 2^52 rows x 2^12 bytes = 2^64: a 64-bit byte total wraps to 0 (= the row bytes present)
    // and a 32-bit block count (blockSize 4096: 2^40 blocks) to 0, so nothing was allocated
    // and the rows were written through an empty block list (SIGSEGV). The bytes are made
    // here from a one-stream export's header (layers and kvHeads patched): no 2^22-stream
    // sequence is ever built, by the test or by the import.
    const layers = 4096, kvHeads = 1024;
    const options = { headDim: 1022, keys: 'f16', values: 'f16', groupSize: 2, blockSize: 4096, maxBytes: 64 << 20, threads: 1 } as const;
    const header = new KVCache({ layers: 1, kvHeads: 1, ...options }).createSequence().export().subarray(0, HEADER);
    const streams = layers * kvHeads;
    const bytes = new Uint8Array(HEADER + 4 * layers + 4 * streams + 4);
    bytes.set(header);
    const v = new DataView(bytes.buffer);
    v.setUint32(16, layers, true);
    v.setUint32(20, kvHeads, true);
    for (let s = 0; s < streams; s++) v.setInt32(HEADER + 4 * layers + 4 * s, 2 ** 30, true);
    const cache = new KVCache({ layers, kvHeads, ...options });
    expectCorrupt(cache, tamper(bytes, () => {}), '2^64-byte wrap-around');
  });

  it('positions, beta, nextPosition and quantization scales are checked', () => {
    const D = 32;
    const cache = new KVCache({ layers: 2, kvHeads: 1, headDim: D, keys: 'int8', values: 'int4', groupSize: 16, threads: 1 });
    const seq = filled(cache, [4, 3]);
    const bytes = seq.export();
    // int8 row: D codes + one f16 scale per group = 36 bytes; int4: D/2 + (scale, min) per group = 24.
    const layout: Layout = { layers: 2, streams: 2, lengths: [4, 3], keyRowBytes: 36, valueRowBytes: 24 };
    const s1 = streamOffsets(layout, 1);
    expectCorrupt(cache, tamper(bytes, (v) => v.setInt32(s1.positions + 4, -7, true)), 'negative position');
    expectCorrupt(cache, tamper(bytes, (v) => v.setInt32(s1.positions + 8, 0x7fffffff, true)), 'position 2^31 - 1');
    expectCorrupt(cache, tamper(bytes, (v) => v.setFloat32(s1.beta, NaN, true)), 'NaN beta');
    expectCorrupt(cache, tamper(bytes, (v) => v.setFloat32(s1.beta + 4, -Infinity, true)), '-Infinity beta');
    expectCorrupt(cache, tamper(bytes, (v) => v.setInt32(HEADER + 4, -1, true)), 'negative nextPosition');
    expectCorrupt(cache, tamper(bytes, (v) => v.setUint16(s1.keys + 36 + D + 2, 0x7c00, true)), 'int8 scale Inf');
    expectCorrupt(cache, tamper(bytes, (v) => v.setUint16(s1.keys + D, 0xfe00, true)), 'int8 scale NaN');
    expectCorrupt(cache, tamper(bytes, (v) => v.setUint16(s1.values + 24 + D / 2 + 2, 0x7e00, true)), 'int4 minimum NaN');
    expectCorrupt(cache, tamper(bytes, (v) => v.setUint16(s1.values + D / 2 + 4, 0xfc00, true)), 'int4 scale -Inf');
    // Control: a finite change of the same bytes imports.
    const ok = cache.importSequence(tamper(bytes, (v) => v.setUint16(s1.keys + D, 0x3c00, true)));
    expect(ok.length(1, 0)).toBe(3);
  });

  it('plain rows (f32, f16, bf16) must hold finite values, as append guarantees', () => {
    const D = 8;
    for (const [storage, elem, bad] of [['f32', 4, [0x7fc00000, 0xff800000]], ['f16', 2, [0x7c00, 0xfe00]], ['bf16', 2, [0x7f80, 0xffc1]]] as const) {
      const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: D, keys: storage, values: storage, threads: 1 });
      const bytes = filled(cache, [2]).export();
      const layout: Layout = { layers: 1, streams: 1, lengths: [2], keyRowBytes: elem * D, valueRowBytes: elem * D };
      const s0 = streamOffsets(layout, 0);
      const put = (v: DataView, at: number, bits: number): void => (elem === 4 ? v.setUint32(at, bits, true) : v.setUint16(at, bits, true));
      expectCorrupt(cache, tamper(bytes, (v) => put(v, s0.keys + elem * (D + 3), bad[0])), `${storage} key NaN / Inf`);
      expectCorrupt(cache, tamper(bytes, (v) => put(v, s0.values + elem * 5, bad[1])), `${storage} value NaN / Inf`);
    }
  });

  it('positions need not ascend (append accepts any non-negative positions); they round-trip', () => {
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, threads: 1 });
    const seq = filled(cache, [3], [[9, 2, 5]]);
    const again = cache.importSequence(seq.export());
    expect(Array.from(again.read(0, 0).positions)).toEqual([9, 2, 5]);
    expect(again.nextPosition(0)).toBe(6);
  });

  it('errors are KVCacheErrors', () => {
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 8, threads: 1 });
    expect(() => cache.importSequence(new Uint8Array(10))).toThrow(KVCacheError);
  });
});
