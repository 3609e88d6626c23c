// Background maintenance of tiered caches (cpp/core/tiers/tier_splice.cpp, lib/maintain.ts):
// the swap keeps the snapshot's aged blocks as they are and every row appended during the pass
// bit-exact in tier 0; maintain() keeps a tiered sequence under its target while it decodes.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type MaintenancePass, Sequence } from '../../lib/index';
import { native } from '../../lib/native/binding';
import { attentionReference } from '../reference/attention-reference';
import { expectBitExact, expectClose, expectIntsEqual } from '../reference/compare';
import { randn, testRng, type Rng } from '../reference/random';
import { outputTol } from '../foundation/attention-tolerance';
import { decodeStep } from '../support/decode-step';

const shape = { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, blockSize: 8, threads: 1, queryReservoir: 64 } as const;
const ROW = shape.kvHeads * shape.headDim;
const Q = shape.queryHeads * shape.headDim;
// f32 on top: the rows appended during a pass read back exactly as appended.
const TIERS = [{ rows: 24, keys: 'f32', values: 'f32' }, { keys: 'int8', values: 'int4' }] as const;

const step = decodeStep;

describe('precision tiers: maintenance', () => {
  it('replacePrefix: the compacted snapshot\'s rows, then the rows appended meanwhile, bit-exact', async () => {
    const rng = testRng('splice');
    const cache = new KVCache({ ...shape, tiers: [...TIERS] });
    const seq = cache.createSequence();
    for (let t = 0; t < 120; t++) step(rng, seq);
    const snap = new Sequence(cache, native().snapshot(seq.native));
    await new Compactor({ ratio: 0.5, protect: { sinks: 2, recent: 16 } }).compact(snap);
    const appended: Float32Array[][] = [];
    for (let t = 0; t < 3; t++) appended.push(step(rng, seq));
    const want = Array.from({ length: 4 }, (_, i) => snap.read(Math.floor(i / 2), i % 2));
    native().replacePrefix(seq.native, snap.native);
    for (let l = 0; l < shape.layers; l++) {
      for (let h = 0; h < shape.kvHeads; h++) {
        const got = seq.read(l, h);
        const w = want[l * 2 + h]!;
        const M = w.positions.length;
        expect(got.positions.length).toBe(M + 3);
        expectIntsEqual(got.positions.subarray(0, M), w.positions, `positions ${l}/${h}`);
        expectIntsEqual(got.positions.subarray(M), Int32Array.from([120, 121, 122]), `tail positions ${l}/${h}`);
        expectBitExact(got.keys.subarray(0, M * 32), w.keys, `snapshot keys ${l}/${h}`);
        expectBitExact(got.values.subarray(0, M * 32), w.values, `snapshot values ${l}/${h}`);
        expectBitExact(got.beta.subarray(0, M), w.beta, `snapshot beta ${l}/${h}`);
        for (let t = 0; t < 3; t++) {
          expectBitExact(got.keys.subarray((M + t) * 32, (M + t + 1) * 32), appended[t]![l]!.subarray(h * 32, (h + 1) * 32), `tail key ${t}`);
        }
      }
    }
    snap.free();
    seq.free();
    expect(cache.stats().blocksUsed).toBe(0);
    cache.dispose();
  });

  for (const kind of ['compact', 'evict'] as const) {
    it(`maintain() with ${kind === 'compact' ? 'a Compactor' : 'an EvictionPolicy'} keeps a tiered sequence under its target while it decodes`, async () => {
      const rng = testRng(`maintain ${kind}`);
      const cache = new KVCache({ ...shape, tiers: [...TIERS] });
      const seq = cache.createSequence();
      const blockBytes = cache.stats().blockBytes;
      const streams = shape.layers * shape.kvHeads;
      const maxBytes = streams * 14 * blockBytes;
      const policy = kind === 'compact' ? new Compactor({ ratio: 0.5 }) : EvictionPolicy.keyNorm({ sinks: 2, recent: 16 });
      const m = cache.maintain(seq, { maxBytes, policy, keepRecent: 16, sinks: 2, headroom: 0.25 });
      const passes: MaintenancePass[] = [];
      m.on('pass', (p: MaintenancePass) => passes.push(p));
      m.on('error', (e) => expect.fail(String(e)));
      const history: Float32Array[][] = [];
      for (let t = 0; t < 600; t++) {
        history.push(step(rng, seq));
        // Every 8 steps the decode loop waits for a pass in flight: a pass then sees at most
        // 8 appended rows, fewer than tier 0 holds before it ages (24 + one aged block), so
        // its swap is never refused however fast or slow the machine runs the compaction.
        if (t % 8 === 0) await m.idle();
      }
      await m.idle();
      await m.stop();
      expect(passes.length).toBeGreaterThanOrEqual(2);
      expect(passes.every((p) => p.kind === kind && p.rowsAfter < p.rowsBefore + p.rowsAppendedDuring)).toBe(true);
      expect(m.usage().bytes).toBeLessThanOrEqual(maxBytes + 2 * streams * blockBytes);
      // Aged rows hold the older part: more rows than f32 blocks could.
      expect(cache.stats().tiers![1]!.rows).toBeGreaterThan(0);
      const next = seq.nextPosition(0);
      for (let l = 0; l < shape.layers; l++) {
        const q = randn(rng, Q);
        const streamsRows = [0, 1].map((h) => {
          const r = seq.read(l, h);
          const n = r.positions.length;
          for (let i = 1; i < n; i++) expect(r.positions[i]!).toBeGreaterThan(r.positions[i - 1]!);
          // The newest rows are in tier 0, bit-exact.
          expectIntsEqual(r.positions.subarray(n - 16), Int32Array.from({ length: 16 }, (_, i) => next - 16 + i), `positions ${l}/${h}`);
          for (let i = 0; i < 16; i++) {
            expectBitExact(r.keys.subarray((n - 16 + i) * 32, (n - 15 + i) * 32), history[next - 16 + i]![l]!.subarray(h * 32, (h + 1) * 32), `key ${l}/${h} ${i}`);
          }
          return { keys: r.keys, values: r.values, positions: r.positions, beta: r.beta };
        });
        const ref = attentionReference({ headDim: 32, queryHeads: shape.queryHeads, streams: streamsRows, queries: q });
        // The query sits after the last row (position next): every row is visible.
        seq.append(l, randn(rng, ROW), randn(rng, ROW));
        const rows = [0, 1].map((h) => seq.read(l, h));
        const ref2 = attentionReference({
          headDim: 32, queryHeads: shape.queryHeads, queries: q,
          streams: rows.map((r) => ({ keys: r.keys, values: r.values, positions: r.positions, beta: r.beta })),
        });
        expect(ref.out.length).toBe(ref2.out.length);
        expectClose(seq.attention(l, q), ref2.out, { rel: 2 * outputTol(rows[0]!.positions.length).rel }, `attention ${l}`);
      }
      cache.dispose();
    });
  }
});
