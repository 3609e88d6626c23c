// KVCache.devices(): the CPU is always there; CUDA reports whether it is usable and, if not, why.
import { describe, expect, it } from 'vitest';
import { KVCache, KVCacheError } from '../../lib/index';
import { expectKVError } from './helpers';

describe('devices', () => {
  it('cpu is available with a thread count and a SIMD level', () => {
    const d = KVCache.devices();
    expect(d.cpu.available).toBe(true);
    expect(Number.isInteger(d.cpu.threads) && d.cpu.threads >= 1).toBe(true);
    expect(typeof d.cpu.simd).toBe('string');
    expect(d.cpu.simd.length).toBeGreaterThan(0);
  });

  it('cuda has an available boolean, a compiled boolean, and a reason when unavailable', () => {
    const { cuda } = KVCache.devices();
    expect(typeof cuda.available).toBe('boolean');
    expect(typeof cuda.compiled).toBe('boolean');
    if (!cuda.compiled) expect(cuda.available).toBe(false);
    if (!cuda.available) {
      expect(typeof cuda.reason).toBe('string');
      expect((cuda.reason ?? '').length).toBeGreaterThan(0);
    } else {
      expect(typeof cuda.name).toBe('string');
    }
  });

  it('device "cuda" without a usable GPU throws CUDA_UNAVAILABLE naming the reason', () => {
    const { cuda } = KVCache.devices();
    if (cuda.available) return; // covered by the CUDA parity tests instead
    const err = expectKVError(() => new KVCache({ layers: 1, kvHeads: 1, headDim: 8, device: 'cuda' }), 'CUDA_UNAVAILABLE');
    expect(err).toBeInstanceOf(KVCacheError);
    expect(err.message).toContain(cuda.reason as string);
  });
});
