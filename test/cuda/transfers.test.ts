// Host <-> device copies of device 'cuda', counted by the emulator's runtime (test addon
// only; a GPU has no such counters, so this file always runs on the emulator). Append copies
// its inputs up and nothing down; decode attention copies down exactly its output and the
// log-sum-exp, never a row of the cache.
import { describe, expect, it } from 'vitest';

import { KVCache } from '../../lib/index';
import { nativeTest } from '../../lib/native/binding';
import { randn, testRng } from '../reference/random';
import { cudaTarget } from '../support/cuda-target';

cudaTarget('emulator');

describe('device cuda host <-> device copies (emulator counters)', () => {
  it('append uploads and downloads nothing; attention downloads exactly output + lse', () => {
    const addon = nativeTest();
    const rng = testRng();
    const kvHeads = 2, queryHeads = 8, D = 128, T = 300;
    const cache = new KVCache({ layers: 2, kvHeads, queryHeads, headDim: D, blockSize: 32, keys: 'int8', values: 'int4', device: 'cuda' });
    const seq = cache.createSequence();
    const keys = randn(rng, T * kvHeads * D);
    const values = randn(rng, T * kvHeads * D);

    addon.resetCudaTransferStats();
    seq.append(1, keys, values);
    const afterAppend = addon.cudaTransferStats();
    expect(afterAppend.deviceToHostBytes).toBe(0);
    expect(afterAppend.deviceToHostCalls).toBe(0);
    // At least the f32 keys and values went up (plus block tables and positions).
    expect(afterAppend.hostToDeviceBytes).toBeGreaterThanOrEqual(keys.byteLength + values.byteLength);

    const q = randn(rng, queryHeads * D);
    const lse = new Float32Array(queryHeads);
    addon.resetCudaTransferStats();
    const out = seq.attention(1, q, { lse });
    const afterAttention = addon.cudaTransferStats();
    expect(afterAttention.deviceToHostBytes).toBe(out.byteLength + lse.byteLength);
    expect(afterAttention.deviceToHostCalls).toBe(1);
    // The upload is the query and the block tables, far less than one stream's rows.
    expect(afterAttention.hostToDeviceBytes).toBeLessThan(T * D);
    expect(out.every(Number.isFinite)).toBe(true);
    cache.dispose();
  });
});
