// Background maintenance on device 'cuda' (the real GPU when there is one, else the SIMT
// emulator: test/support/cuda-target.ts): the snapshot/swap of replacePrefix gives the rows
// device 'cpu' gives (bit-identical on the emulator, whose stored rows match the CPU's), with
// key summaries kept, in the block-aligned and the copying case; maintain() runs on 'cuda'.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, Sequence, type KVCacheOptions, type MaintenancePass } from '../../lib/index';
import { native } from '../../lib/native/binding';
import { randn, testRng } from '../reference/random';
import { cudaTarget } from '../support/cuda-target';

const target = cudaTarget();
const base: KVCacheOptions = { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, blockSize: 16, keys: 'int8', values: 'int4', keySummaries: true, threads: 1 };

describe(`replacePrefix on device 'cuda' (${target.kind})`, () => {
  for (const rows of [96, 101]) {
    it(`matches device 'cpu' (${rows} rows: ${rows % 16 === 0 ? 'block-aligned' : 'copying'})`, () => {
      const rng = testRng();
      const k1 = randn(rng, rows * 64), v1 = randn(rng, rows * 64), k2 = randn(rng, 21 * 64), v2 = randn(rng, 21 * 64);
      const run = (device: 'cpu' | 'cuda') => {
        const cache = new KVCache({ ...base, device });
        const seq = cache.createSequence();
        for (let l = 0; l < 2; l++) seq.append(l, k1, v1);
        const snap = new Sequence(cache, native().snapshot(seq.native));
        snap.evict(EvictionPolicy.keyNorm({ sinks: 2, recent: 8 }), { keep: 48 });
        for (let l = 0; l < 2; l++) seq.append(l, k2, v2);
        native().replacePrefix(seq.native, snap.native);
        snap.free();
        const out = [0, 1].flatMap((l) => [0, 1].map((h) => seq.read(l, h)));
        const q = randn(testRng('q'), 4 * 32);
        const sel = seq.sparseSelection(1, q, { tokens: 32, sinks: 4, recent: 16 });
        cache.dispose();
        return { out, sel };
      };
      const a = run('cpu');
      const b = run('cuda');
      a.out.forEach((r, i) => {
        expect(Array.from(b.out[i]!.positions)).toEqual(Array.from(r.positions));
        if (target.rules === 'exact') {
          expect(Buffer.from(b.out[i]!.keys.buffer).equals(Buffer.from(r.keys.buffer)), `keys ${i}`).toBe(true);
          expect(Buffer.from(b.out[i]!.values.buffer).equals(Buffer.from(r.values.buffer)), `values ${i}`).toBe(true);
        }
      });
      // The summaries of the rebuilt blocks pick the same blocks.
      a.sel.forEach((s, h) => expect(Array.from(b.sel[h]!.blocks)).toEqual(Array.from(s.blocks)));
    });
  }

  it('maintain() compacts in the background on device cuda', async () => {
    const rng = testRng();
    const cache = new KVCache({ ...base, keySummaries: false, device: 'cuda' });
    const seq = cache.createSequence();
    const m = cache.maintain(seq, { maxBytes: 4 * 8 * cache.stats().blockBytes, policy: new Compactor({ ratio: 0.5 }), keepRecent: 16, sinks: 2 });
    const passes: MaintenancePass[] = [];
    const errors: unknown[] = [];
    m.on('pass', (p: MaintenancePass) => passes.push(p));
    m.on('error', (e) => errors.push(e));
    for (let t = 0; t < 300; t++) {
      for (let l = 0; l < 2; l++) {
        seq.append(l, randn(rng, 64), randn(rng, 64));
        seq.attention(l, randn(rng, 128), { recordQueries: true });
      }
      if (t % 16 === 0) await new Promise<void>((r) => setImmediate(r));
    }
    await m.stop();
    expect(errors).toEqual([]);
    expect(passes.length).toBeGreaterThan(0);
    expect(seq.nextPosition(0)).toBe(300);
    cache.dispose();
  });
});
