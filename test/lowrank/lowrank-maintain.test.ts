// cache.maintain() on low-rank caches: the snapshot and the swap splice coefficient rows, so a
// pass applies only under the bases the snapshot was taken with (a refit in between is a
// 'changed' skip), and waits while streams still calibrate ('unreachable' skip). Checked on
// both policies against a twin cache that receives the same appends without maintenance:
// the newest rows read back bit-exactly, positions stay ascending, bases never change.
import { describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type KVCacheOptions, type MaintenancePass, type MaintenanceSkip, type Sequence } from '../../lib/index';
import { expectBitExact } from '../reference/compare';
import { randn, testRng, type Rng } from '../reference/random';
import { tick } from '../support/decode-step';

const D = 32;
const shape = { layers: 2, kvHeads: 2, headDim: D, queryHeads: 4, blockSize: 16, threads: 1, queryReservoir: 64 } as const;
const STREAMS = shape.layers * shape.kvHeads;

/** An orthonormal [D][r] basis: r columns of the identity in a random order. */
function basis(rng: Rng, r: number): Float32Array {
  const order = Array.from({ length: D }, (_, i) => i);
  for (let i = D - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const b = new Float32Array(D * r);
  for (let j = 0; j < r; j++) b[order[j]! * r + j] = 1;
  return b;
}

function decode(rng: Rng, seqs: Sequence[]): void {
  const row = shape.kvHeads * D;
  for (let l = 0; l < shape.layers; l++) {
    const k = randn(rng, row), v = randn(rng, row), q = randn(rng, shape.queryHeads * D);
    for (const s of seqs) {
      s.append(l, k, v);
      s.attention(l, q, { recordQueries: true });
    }
  }
}

describe('maintain() on a low-rank cache', () => {
  for (const policy of ['compact', 'evict'] as const) {
    for (const lowRank of [{ keys: 8, values: 8 }, { keys: 8, values: D }]) {
      it(`${policy}, ranks ${lowRank.keys}/${lowRank.values}: passes apply, the newest rows are the twin's bit for bit, bases unchanged`, async () => {
        const rng = testRng();
        const options: KVCacheOptions = { ...shape, keys: 'f32', values: 'f32', lowRank: { ...lowRank, calibrationRows: 0 } };
        const cache = new KVCache(options);
        const twin = new KVCache(options);
        const seq = cache.createSequence();
        const plain = twin.createSequence();
        const bases = Array.from({ length: STREAMS }, () => ({ keys: basis(rng, lowRank.keys), values: lowRank.values < D ? basis(rng, lowRank.values) : new Float32Array(0) }));
        for (let i = 0; i < STREAMS; i++) {
          seq.setBases(i >> 1, i & 1, bases[i]!);
          plain.setBases(i >> 1, i & 1, bases[i]!);
        }
        const basesBefore = [0, 1].flatMap((l) => [0, 1].map((h) => seq.bases(l, h)));
        const maxBytes = STREAMS * 8 * cache.stats().blockBytes; // 128 rows per stream
        const m = cache.maintain(seq, {
          maxBytes,
          policy: policy === 'compact' ? new Compactor({ ratio: 0.5 }) : EvictionPolicy.keyNorm({ sinks: 2, recent: 16 }),
          keepRecent: 16,
          sinks: 2,
          headroom: 0.25,
        });
        const passes: MaintenancePass[] = [];
        m.on('pass', (p: MaintenancePass) => passes.push(p));
        m.on('error', (e) => expect.fail(String(e)));
        for (let t = 0; t < 400; t++) {
          decode(rng, [seq, plain]);
          if (t % 8 === 0) await tick();
        }
        await m.idle();
        await m.stop();
        expect(passes.length).toBeGreaterThanOrEqual(2);
        expect(passes.every((p) => p.kind === policy)).toBe(true);
        if (policy === 'compact') expect(passes.some((p) => p.rowsAppendedDuring > 0)).toBe(true);
        for (const p of passes) expect(p.rowsAfter).toBeLessThan(p.rowsBefore + p.rowsAppendedDuring);
        expect(cache.stats().bytesUsed).toBeLessThan(twin.stats().bytesUsed);
        for (let l = 0; l < shape.layers; l++) {
          for (let h = 0; h < shape.kvHeads; h++) {
            expect(seq.bases(l, h)).toEqual(basesBefore[l * 2 + h]);
            const r = seq.read(l, h), w = plain.read(l, h);
            const n = r.positions.length, N = w.positions.length;
            expect(n).toBeLessThan(N);
            for (let i = 1; i < n; i++) expect(r.positions[i]!).toBeGreaterThan(r.positions[i - 1]!);
            const recent = 16;
            expect(Array.from(r.positions.subarray(n - recent))).toEqual(Array.from(w.positions.subarray(N - recent)));
            expectBitExact(r.keys.subarray((n - recent) * D), w.keys.subarray((N - recent) * D), `keys l${l} h${h}`);
            expectBitExact(r.values.subarray((n - recent) * D), w.values.subarray((N - recent) * D), `values l${l} h${h}`);
          }
        }
        // Attention over the maintained sequence stays finite and usable.
        const out = seq.attention(1, randn(rng, shape.queryHeads * D));
        expect(out.every(Number.isFinite)).toBe(true);
        cache.dispose();
        twin.dispose();
      });
    }
  }

  it('a refit of the bases during a pass drops its result (changed); calibrating streams wait (unreachable)', async () => {
    const rng = testRng();
    const cache = new KVCache({ ...shape, keys: 'int8', values: 'int8', groupSize: 8, lowRank: { keys: 8, values: 8, calibrationRows: 96 } });
    const seq = cache.createSequence();
    const blockBytes = cache.stats().blockBytes;
    // While calibrating, the rows are held outside the blocks: a target below one block per
    // stream starts a pass, which waits.
    for (let t = 0; t < 80; t++) decode(rng, [seq]);
    const early = cache.maintain(seq, { maxBytes: (STREAMS * blockBytes) / 2, policy: new Compactor({ ratio: 0.5 }), keepRecent: 8, sinks: 1 });
    const earlySkips: MaintenanceSkip[] = [];
    early.on('skip', (s: MaintenanceSkip) => earlySkips.push(s));
    early.on('pass', () => expect.fail('a pass applied while calibrating'));
    early.check();
    await early.idle();
    await early.stop();
    expect(earlySkips.map((s) => s.reason)).toEqual(['unreachable']);
    expect(earlySkips[0]!.message).toMatch(/4 low-rank streams are still calibrating/);
    expect(Array.from(seq.lengths(0))).toEqual([80, 80]);
    expect(seq.bases(0, 0)).toBeNull();
    // A target of 3 blocks per stream.
    const m = cache.maintain(seq, { maxBytes: STREAMS * 3 * blockBytes, policy: new Compactor({ ratio: 0.5 }), keepRecent: 8, sinks: 1 });
    const skips: MaintenanceSkip[] = [];
    const passes: MaintenancePass[] = [];
    m.on('skip', (s: MaintenanceSkip) => skips.push(s));
    m.on('pass', (p: MaintenancePass) => passes.push(p));
    m.on('error', (e) => expect.fail(String(e)));
    // The fit at row 96: every stream now stores coefficient rows in blocks, and passes apply.
    for (let t = 0; t < 60; t++) {
      decode(rng, [seq]);
      await tick();
    }
    await m.idle();
    expect(seq.bases(0, 0)).not.toBeNull();
    expect(passes.length).toBeGreaterThanOrEqual(1);
    // A refit while a pass runs: nothing of the pass is applied.
    for (let i = 0; i < 64 && !m.running; i++) decode(rng, [seq]);
    expect(m.running).toBe(true);
    const applied = passes.length;
    seq.fitBases();
    const refit = seq.bases(1, 1);
    const lengths = Array.from(seq.lengths(1));
    await m.idle();
    expect(passes.length).toBe(applied);
    expect(skips.at(-1)!.reason).toBe('changed');
    expect(skips.at(-1)!.message).toMatch(/bases .* changed/);
    expect(Array.from(seq.lengths(1))).toEqual(lengths);
    expect(seq.bases(1, 1)).toEqual(refit);
    await m.stop();
    cache.dispose();
  });
});
