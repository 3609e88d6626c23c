// Device 'cuda' (emulated on the CPU): compaction is not implemented by the CUDA backend yet
// (it cannot rewrite rows), so the Compactor says so clearly with UNSUPPORTED.
import { describe, expect, it } from 'vitest';

process.env['KVCOMPACT_CUDA_EMULATION'] = '1';

describe('Compactor on device cuda', () => {
  it('rejects with UNSUPPORTED and leaves the sequence usable', async () => {
    const { Compactor, KVCache, KVCacheError } = await import('../../lib/index');
    if (!KVCache.devices().cuda.available) return; // addon built without the emulated backend
    const cache = new KVCache({ layers: 1, kvHeads: 1, headDim: 32, device: 'cuda', keys: 'f32', values: 'f32' });
    const seq = cache.createSequence();
    const rows = new Float32Array(64 * 32).map((_, i) => Math.sin(i));
    seq.append(0, rows, rows);
    const error = await new Compactor({ ratio: 0.5 }).compact(seq).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KVCacheError);
    expect((error as InstanceType<typeof KVCacheError>).code).toBe('UNSUPPORTED');
    expect((error as Error).message).toMatch(/cuda/);
    expect(() => new Compactor({ ratio: 0.5 }).compactSync(seq)).toThrowError(/not supported on device 'cuda'/);
    expect(seq.length(0, 0)).toBe(64);
    seq.append(0, rows.subarray(0, 32), rows.subarray(0, 32)); // not left busy
    cache.dispose();
  });
});
