// cache.maintain(): a memory target kept in the background while the sequence keeps
// appending and decoding. Passes report what they did, rows appended during a pass survive,
// stop/free/dispose during a pass are safe, and failures arrive as events.
import { describe, expect, it } from 'vitest';
import { Compactor, EvictionPolicy, KVCache, KVCacheError, type MaintenancePass, type MaintenanceSkip, type Sequence } from '../../lib/index';
import { expectBitExact, expectIntsEqual } from '../reference/compare';
import { randn, testRng, type Rng } from '../reference/random';
import { expectKVError } from '../foundation/helpers';
import { decodeStep, tick } from '../support/decode-step';

const shape = { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4 } as const;
const ROW = shape.kvHeads * shape.headDim;
const Q = shape.queryHeads * shape.headDim;

// f32 rows: what is read back is exactly what was appended.
const OPTIONS = { ...shape, blockSize: 16, keys: 'f32', values: 'f32', threads: 1, queryReservoir: 64 } as const;

function makeCache(): KVCache {
  return new KVCache(OPTIONS);
}

const step = decodeStep;

describe('cache.maintain', () => {
  it('keeps a sequence under maxBytes with a Compactor while it decodes, keeping every row appended during a pass', async () => {
    const rng = testRng();
    const cache = makeCache();
    const seq = cache.createSequence();
    const blockBytes = cache.stats().blockBytes;
    const streams = shape.layers * shape.kvHeads;
    const maxBytes = streams * 12 * blockBytes; // 192 rows per stream
    const m = cache.maintain(seq, { maxBytes, policy: new Compactor({ ratio: 0.5 }), keepRecent: 16, sinks: 2, headroom: 0.25 });
    const passes: MaintenancePass[] = [];
    m.on('pass', (p: MaintenancePass) => passes.push(p));
    m.on('error', (e) => expect.fail(String(e)));
    const history: Float32Array[][] = [];
    for (let t = 0; t < 700; t++) {
      history.push(step(rng, seq));
      // Let passes run and settle now and then, as an event loop between decode steps does.
      if (t % 8 === 0) await tick();
    }
    await m.idle();
    await m.stop();
    expect(passes.length).toBeGreaterThanOrEqual(3);
    for (const p of passes) {
      expect(p.kind).toBe('compact');
      expect(p.bytesBefore + streams * blockBytes).toBeGreaterThan(p.targetBytes);
      // Smaller than what the sequence would hold without the pass.
      expect(p.rowsAfter).toBeLessThan(p.rowsBefore + p.rowsAppendedDuring);
      expect(p.milliseconds.swap).toBeGreaterThanOrEqual(0);
      expect(p.milliseconds.total).toBeGreaterThanOrEqual(p.milliseconds.work);
    }
    // A pass ran concurrently with appends at least once (else the test proves nothing about them).
    expect(passes.some((p) => p.rowsAppendedDuring > 0)).toBe(true);
    // Right after each pass, the sequence held at most (1 - headroom) x target + what came in meanwhile.
    for (const p of passes) expect(p.bytesAfter).toBeLessThanOrEqual(0.75 * maxBytes + (p.rowsAppendedDuring / streams + 2 * 16) * streams * blockBytes / 16);
    // The newest rows are all there, bit-exact, at their positions.
    const next = seq.nextPosition(0);
    expect(next).toBe(700);
    for (let l = 0; l < shape.layers; l++) {
      for (let h = 0; h < shape.kvHeads; h++) {
        const r = seq.read(l, h);
        const n = r.positions.length;
        const recent = 16;
        expectIntsEqual(r.positions.subarray(n - recent), Int32Array.from({ length: recent }, (_, i) => next - recent + i), `positions l${l} h${h}`);
        for (let i = 0; i < recent; i++) {
          const k = history[next - recent + i]![l]!.subarray(h * shape.headDim, (h + 1) * shape.headDim);
          expectBitExact(r.keys.subarray((n - recent + i) * shape.headDim, (n - recent + i + 1) * shape.headDim), k, `key l${l} h${h} row ${i}`);
        }
        // Positions stay ascending through every swap.
        for (let i = 1; i < n; i++) expect(r.positions[i]!).toBeGreaterThan(r.positions[i - 1]!);
      }
    }
    cache.dispose();
  });

  it('bytesPerToken with an EvictionPolicy', async () => {
    const rng = testRng();
    const cache = makeCache();
    const seq = cache.createSequence();
    const full = KVCache.bytesPerToken(OPTIONS);
    const m = cache.maintain(seq, { bytesPerToken: full / 3, policy: EvictionPolicy.keyNorm({ sinks: 2, recent: 16 }), keepRecent: 16, sinks: 2 });
    const passes: MaintenancePass[] = [];
    m.on('pass', (p: MaintenancePass) => passes.push(p));
    for (let t = 0; t < 400; t++) step(rng, seq);
    await m.idle();
    expect(passes.length).toBeGreaterThanOrEqual(2);
    expect(passes.every((p) => p.kind === 'evict' && p.bytesAfter < p.bytesBefore)).toBe(true);
    expect(m.usage().bytes).toBeLessThanOrEqual(m.targetBytes() + 4 * cache.stats().blockBytes);
    await m.stop();
    cache.dispose();
  });

  it('stop(), seq.free() and cache.dispose() during a pass are safe', async () => {
    for (const ending of ['stop', 'free', 'dispose'] as const) {
      const rng = testRng(ending);
      const cache = makeCache();
      const seq = cache.createSequence();
      const m = cache.maintain(seq, { maxBytes: 4 * 8 * cache.stats().blockBytes, policy: new Compactor({ ratio: 0.5 }), keepRecent: 8, sinks: 1 });
      const events: string[] = [];
      m.on('pass', () => events.push('pass'));
      m.on('error', (e) => events.push(`error ${String(e)}`));
      const state = () => (cache.disposed || seq.freed ? null : Array.from(seq.lengths(0)));
      let t = 0;
      while (!m.running && t < 500) {
        step(rng, seq);
        t++;
      }
      expect(m.running, `${ending}: a pass started`).toBe(true);
      const lengths = state();
      if (ending === 'stop') await m.stop();
      if (ending === 'free') seq.free();
      if (ending === 'dispose') cache.dispose();
      await m.idle();
      expect(events, ending).toEqual([]);
      if (ending === 'stop') {
        // Nothing of the aborted pass was applied, and appends no longer start passes.
        expect(state()).toEqual(lengths);
        for (let i = 0; i < 50; i++) step(rng, seq);
        expect(m.running).toBe(false);
        expect(cache.stats().sequences).toBe(1); // the snapshot is gone
      }
      if (!cache.disposed) cache.dispose();
    }
  });

  it('a failing pass is an error event, not a crash; a sequence changed below the snapshot is a skip', async () => {
    const rng = testRng();
    const cache = makeCache();
    const seq = cache.createSequence();
    // Given queries of the wrong shape: every compaction fails with SHAPE_MISMATCH.
    const broken = new Compactor({ ratio: 0.5, queries: [new Float32Array(3), null] });
    const m = cache.maintain(seq, { maxBytes: 4 * 8 * cache.stats().blockBytes, policy: broken, keepRecent: 8, sinks: 1 });
    const errors: unknown[] = [];
    m.on('error', (e) => errors.push(e));
    for (let t = 0; t < 160; t++) step(rng, seq);
    await m.idle();
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(errors[0]).toBeInstanceOf(KVCacheError);
    expect((errors[0] as KVCacheError).code).toBe('SHAPE_MISMATCH');
    expect(m.errors).toBe(errors.length);
    await m.stop();
    // Without an 'error' listener the failure is kept, not thrown.
    const quiet = cache.maintain(seq, { maxBytes: 4 * 8 * cache.stats().blockBytes, policy: broken, keepRecent: 8, sinks: 1 });
    // A pass starts once the streams end on a whole block.
    for (let i = 0; i < 16 && !quiet.running; i++) step(rng, seq);
    await quiet.idle();
    expect((quiet.lastError as KVCacheError).code).toBe('SHAPE_MISMATCH');
    await quiet.stop();
    // Truncating below the snapshot while the pass runs: the result is dropped ('skip').
    const m2 = cache.maintain(seq, { maxBytes: 4 * 8 * cache.stats().blockBytes, policy: new Compactor({ ratio: 0.5 }), keepRecent: 8, sinks: 1 });
    const skips: MaintenanceSkip[] = [];
    const passes: MaintenancePass[] = [];
    m2.on('skip', (s: MaintenanceSkip) => skips.push(s));
    m2.on('pass', (p: MaintenancePass) => passes.push(p));
    for (let i = 0; i < 16 && !m2.running; i++) step(rng, seq);
    expect(m2.running).toBe(true);
    seq.truncate(20);
    const lengths = Array.from(seq.lengths(1));
    await m2.idle();
    expect(passes).toEqual([]);
    expect(skips.map((s) => s.reason)).toEqual(['changed']);
    expect(Array.from(seq.lengths(1))).toEqual(lengths);
    await m2.stop();
    cache.dispose();
  });

  it('checks its options', () => {
    const cache = makeCache();
    const seq = cache.createSequence();
    const policy = new Compactor({ ratio: 0.5 });
    expectKVError(() => cache.maintain(seq, { policy } as never), 'INVALID_ARGUMENT');
    expectKVError(() => cache.maintain(seq, { maxBytes: -1, policy }), 'INVALID_ARGUMENT');
    expectKVError(() => cache.maintain(seq, { maxBytes: 1e6, policy: {} as never }), 'INVALID_ARGUMENT');
    expectKVError(() => cache.maintain(seq, { maxBytes: 1e6, policy, headroom: 1 }), 'INVALID_ARGUMENT');
    expectKVError(() => cache.maintain(seq, { maxBytes: 1e6, policy, bogus: 1 } as never), 'INVALID_ARGUMENT');
    const m = cache.maintain(seq, { maxBytes: 1e6, policy });
    expectKVError(() => cache.maintain(seq, { maxBytes: 1e6, policy }), 'BUSY');
    void m.stop();
    const other = new KVCache({ ...shape, threads: 1 });
    expectKVError(() => other.maintain(seq, { maxBytes: 1e6, policy }), 'INVALID_ARGUMENT');
    other.dispose();
    cache.dispose();
  });
});
