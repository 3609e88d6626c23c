// The fuzzer's inputs through the public API: every seed of test/fuzz/corpus/ (real exports)
// imports into a cache built from its own header and reads back, and every input of
// test/fuzz/regressions/ (inputs that once crashed or misbehaved in fuzz_import.cpp) and a
// damaged copy of each seed is rejected with a KVCacheError or imports cleanly: none may
// crash the process. Run under ASan by `npm run test:sanitize`.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { KVCache, KVCacheError } from '../../lib/index';

const STORAGES = ['f32', 'f16', 'bf16', 'int8', 'int4'] as const;
const dir = (name: string) => path.join(__dirname, name);
const files = (name: string) => readdirSync(dir(name)).filter((f) => !f.startsWith('.')).sort().map((f) => path.join(dir(name), f));

/** The export bytes of a corpus file (after the harness's mode byte) and, if it parses, the cache that can import them. */
function cacheFor(bytes: Uint8Array): KVCache | undefined {
  if (bytes.length < 64) return undefined;
  const f = new DataView(bytes.buffer, bytes.byteOffset + 16, 44);
  const u = (i: number) => f.getUint32(4 * i, true);
  const keys = STORAGES[u(4)];
  const values = STORAGES[u(5)];
  if (!keys || !values || u(0) * u(1) > 4096) return undefined;
  try {
    return new KVCache({
      layers: u(0), kvHeads: u(1), headDim: u(2), groupSize: u(3), keys, values,
      rotate: { keys: u(6) !== 0, values: u(7) !== 0 }, rotationSeed: u(8), blockSize: 7, threads: 1, maxBytes: 1 << 24,
    });
  } catch (e) {
    expect(e).toBeInstanceOf(KVCacheError);
    return undefined;
  }
}

function importOrReject(file: Uint8Array): string {
  const bytes = file.subarray(1);
  const cache = cacheFor(bytes);
  if (!cache) return 'no cache';
  try {
    const seq = cache.importSequence(bytes);
    expect(Buffer.from(seq.export()).equals(Buffer.from(bytes)), 'export(import(x)) == x').toBe(true);
    // One decode step over the imported rows, as the harness does (whatever they hold).
    const { queryHeads, headDim } = cache.config;
    if (seq.length(0, 0) > 0) {
      try {
        seq.attention(0, new Float32Array(queryHeads * headDim).fill(0.25));
      } catch (e) {
        if (!(e instanceof KVCacheError)) throw e;
      }
    }
    return 'imported';
  } catch (e) {
    if (!(e instanceof KVCacheError)) throw e;
    return e.code;
  } finally {
    cache.dispose();
  }
}

describe('fuzzer inputs through importSequence', () => {
  const seeds = files('corpus').filter((f) => readFileSync(f)[0]! % 4 < 2);

  it('every export seed imports (any block size) and exports the same bytes', () => {
    expect(seeds.length).toBeGreaterThanOrEqual(40);
    for (const f of seeds) expect(importOrReject(readFileSync(f)), path.basename(f)).toBe('imported');
  });

  it('a seed with one byte flipped anywhere is rejected with CORRUPT_DATA (the checksum)', () => {
    for (const f of seeds) {
      const file = readFileSync(f);
      const at = 1 + ((file.length * 7919) % (file.length - 1));
      file[at] = file[at]! ^ 0x40;
      expect(importOrReject(file), `${path.basename(f)} byte ${at}`).toBe('CORRUPT_DATA');
    }
  });

  it('regression inputs never crash the process', () => {
    for (const f of files('regressions')) importOrReject(readFileSync(f));
  });
});
