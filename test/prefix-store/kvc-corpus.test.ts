// Every .kvc file of every format version in test/kvc-corpus/ still imports: into a cache of
// the options it was written with it decodes to exactly the recorded rows (digest of the
// dequantized keys, values, beta and positions), with the recorded lengths; a file of the
// current version exports back to the same bytes; the TypeScript reader of the layout
// (docs/kvc-format.md) agrees with the native one; damaged files are rejected.
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVCache, KVCacheError, type KVCacheOptions } from '../../lib/index';
import { EXPORT_VERSION, LOW_RANK_RANKS_EXPORT_VERSION, ROPE_EXPORT_VERSION, TIERED_EXPORT_VERSION, readExportLayout } from '../../lib/prefix-store/export-layout';
import { decodedDigest } from '../../scripts/make-kvc-corpus';

const corpus = path.resolve(__dirname, '../kvc-corpus');
const versions = readdirSync(corpus).filter((d) => /^v\d+$/.test(d));

describe('.kvc corpus', () => {
  it('has files of the current versions', () => {
    expect(versions).toContain(`v${EXPORT_VERSION}`);
    expect(versions).toContain(`v${ROPE_EXPORT_VERSION}`);
    expect(versions).toContain('v1');
    expect(versions).toContain(`v${TIERED_EXPORT_VERSION}`);
    expect(versions).toContain(`v${LOW_RANK_RANKS_EXPORT_VERSION}`);
  });
  for (const v of versions) {
    const manifest = JSON.parse(readFileSync(path.join(corpus, v, 'manifest.json'), 'utf8')) as {
      version: number;
      files: { file: string; options: KVCacheOptions; lengths: number[][]; nextPositions: number[]; decoded: string }[];
    };
    for (const f of manifest.files) {
      it(`${v}/${f.file} imports and decodes to the recorded rows`, () => {
        const bytes = new Uint8Array(readFileSync(path.join(corpus, v, f.file)));
        const cache = new KVCache(f.options);
        const seq = cache.importSequence(bytes);
        for (let l = 0; l < f.options.layers; l++) {
          expect(Array.from(seq.lengths(l))).toEqual(f.lengths[l]);
          expect(seq.nextPosition(l)).toBe(f.nextPositions[l]);
        }
        expect(decodedDigest(seq, f.options.layers, f.options.kvHeads)).toBe(f.decoded);
        if (manifest.version === EXPORT_VERSION || manifest.version === ROPE_EXPORT_VERSION) {
          expect(Buffer.from(seq.export()).equals(Buffer.from(bytes)), 'exports back to the same bytes').toBe(true);
          const layout = readExportLayout(bytes);
          // Low-rank exports carry their bases before the tables: stored whole, never split.
          if (f.options.lowRank) expect(layout).toBeNull();
          else expect(Array.from(layout!.lengths)).toEqual(f.lengths.flat());
        }
        if (manifest.version === TIERED_EXPORT_VERSION || manifest.version === LOW_RANK_RANKS_EXPORT_VERSION) {
          expect(Buffer.from(seq.export()).equals(Buffer.from(bytes)), 'exports back to the same bytes').toBe(true);
          expect(readExportLayout(bytes), 'tiered and version 5 (low-rank) exports are kept whole').toBeNull();
        }
        // one flipped bit anywhere: rejected as CORRUPT_DATA
        for (const at of [0, 9, 20, bytes.length >> 1, bytes.length - 1]) {
          const bad = new Uint8Array(bytes);
          bad[at]! ^= 0x04;
          let code: string | undefined;
          try {
            cache.importSequence(bad);
          } catch (e) {
            code = (e as KVCacheError).code;
          }
          expect(code, `flip at ${at}`).toBe('CORRUPT_DATA');
        }
        cache.dispose();
      });
    }
  }
});
