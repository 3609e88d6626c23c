// Compaction and eviction on device 'cuda' keep the rows on the device: the backend computes
// scores, keep sets and fits where the rows live (cuda/backend/cuda_compaction*.cu,
// cuda_eviction.cu), so only keep sets (4 bytes per kept row), per-stream reports and, for
// budgets planned across heads on the host, per-row scores (4 bytes per row) come back. Counted by the
// emulator's runtime (test addon only), so this file always runs on the emulator. The same
// counters see seq.read() move every row, which shows they would catch a compaction or an
// eviction that read rows through the host.
import { afterAll, describe, expect, it } from 'vitest';

import { Compactor, EvictionPolicy, KVCache, type Sequence } from '../../lib/index';
import { nativeTest } from '../../lib/native/binding';
import { randn, testRng } from '../reference/random';
import { cudaTarget } from '../support/cuda-target';

cudaTarget('emulator');

const LAYERS = 2;
const KV_HEADS = 2;
const QUERY_HEADS = 8;
const D = 64;
const T = 256;
const STREAMS = LAYERS * KV_HEADS;

function filled(cache: KVCache, queryTokens: number): Sequence {
  const rng = testRng();
  const seq = cache.createSequence();
  for (let l = 0; l < LAYERS; l++) {
    seq.append(l, randn(rng, T * KV_HEADS * D), randn(rng, T * KV_HEADS * D));
    for (let i = 0; i < queryTokens; i++) {
      seq.attention(l, randn(rng, QUERY_HEADS * D), { recordQueries: true, accumulateScores: true });
    }
  }
  return seq;
}

describe('device cuda compaction and eviction copy no rows to the host (emulator counters)', () => {
  const addon = nativeTest();
  const cache = new KVCache({
    layers: LAYERS, kvHeads: KV_HEADS, queryHeads: QUERY_HEADS, headDim: D, blockSize: 16,
    keys: 'int8', values: 'int4', groupSize: 32, rotate: { values: true }, device: 'cuda', threads: 1,
  });
  // What one read of a single stream moves: every row's keys and values as f32.
  function readBytes(seq: Sequence): number {
    addon.resetCudaTransferStats();
    const rows = seq.read(0, 0);
    const moved = addon.cudaTransferStats().deviceToHostBytes;
    expect(moved).toBeGreaterThanOrEqual(rows.keys.byteLength + rows.values.byteLength);
    return moved;
  }

  it('compact() brings back keep sets and reports only', async () => {
    const seq = filled(cache, 40);
    const oneStreamRead = readBytes(seq);
    addon.resetCudaTransferStats();
    const report = await new Compactor({ ratio: 0.25, threads: 1 }).compact(seq);
    const moved = addon.cudaTransferStats();
    expect(report.rowsAfter).toBeLessThan(report.rowsBefore);
    // Every stream was fitted on the device (rows rewritten), not only gathered.
    for (const s of report.streams) expect(s.querySource).toBe('recorded');
    // The native bound (cuda/tests/compaction_backend_tests.cpp): 4 bytes per kept row, a
    // few words per stream and chunk (one chunk per stream here).
    const bound = 4 * report.rowsAfter + 24 * STREAMS + 32 * STREAMS;
    console.log(`[cuda transfers] compact: ${moved.deviceToHostBytes} bytes device->host in ${moved.deviceToHostCalls} copies ` +
      `(bound ${bound}; ${report.rowsAfter} kept rows of ${D} dims; seq.read() of one stream moves ${oneStreamRead})`);
    expect(moved.deviceToHostBytes).toBeLessThanOrEqual(bound);
    // Less than an eighth of the kept rows' keys alone, and less than one stream's read.
    expect(moved.deviceToHostBytes).toBeLessThan((report.rowsAfter * D * 4) / 8);
    expect(moved.deviceToHostBytes).toBeLessThan(oneStreamRead / 8);
    seq.free();
  });

  for (const [name, policy] of [
    ['keyNorm', EvictionPolicy.keyNorm()],
    ['snapKV', EvictionPolicy.snapKV({ window: 8, pool: 5 })],
    ['h2o', EvictionPolicy.h2o()],
  ] as const) {
    it(`evict(${name}) brings back keep sets (and at most scores) only`, () => {
      const seq = filled(cache, 16);
      const oneStreamRead = readBytes(seq);
      addon.resetCudaTransferStats();
      const report = seq.evict(policy, { ratio: 0.5 });
      const moved = addon.cudaTransferStats();
      expect(report.rowsAfter).toBe(STREAMS * T / 2);
      // A uniform budget is planned per stream on the device: exactly the keep sets come back,
      // 4 bytes per kept row (as the native test of selectRows asserts), never a row.
      const bound = 4 * report.rowsAfter;
      console.log(`[cuda transfers] evict ${name}: ${moved.deviceToHostBytes} bytes device->host in ${moved.deviceToHostCalls} copies ` +
        `(bound ${bound}; ${report.rowsBefore} rows before, seq.read() of one stream moves ${oneStreamRead})`);
      expect(moved.deviceToHostBytes).toBe(bound);
      expect(moved.deviceToHostBytes).toBeLessThan(oneStreamRead / 8);
      seq.free();
    });
  }

  afterAll(() => cache.dispose());
});
