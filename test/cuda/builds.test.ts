// The two addons: the production one (build/Release/kvcompact.node, what node-gyp-build loads)
// holds no emulator code and ignores KVCOMPACT_CUDA_EMULATION, saying so; the test one
// (build/Release/test/kvcompact_test.node, KVCOMPACT_NATIVE=test) holds the emulator and
// the test-only functions. Symbols are read with `nm -C` from the files CMake built.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

process.env['KVCOMPACT_CUDA_EMULATION'] = '1';
delete process.env['KVCOMPACT_NATIVE']; // this file's process uses the production addon

import { KVCache } from '../../lib/index';
import { loadNative, native, nativeTest, requestedBuild, testAddonPath } from '../../lib/native/binding';

const ROOT = path.resolve(__dirname, '../..');
const PRODUCTION = path.join(ROOT, 'build', 'Release', 'kvcompact.node');
const TEST = testAddonPath();

// Names only emulator code defines: its runtime (namespace kvc_emu), the kernels and backend
// compiled against it (namespace kvc::cuda_emu), and the emulated backend's factory.
const EMULATOR_SYMBOL = /\bkvc_emu::|\bcuda_emu::|createEmulatedCudaBackend/;

function emulatorSymbols(file: string): string[] {
  expect(existsSync(file), `${file} exists (npm run build:native builds it)`).toBe(true);
  const nm = spawnSync('nm', ['-C', file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  expect(nm.error, 'nm runs').toBeUndefined();
  expect(nm.status, nm.stderr).toBe(0);
  expect(nm.stdout.length, 'nm lists symbols (the .node is not stripped)').toBeGreaterThan(1000);
  return nm.stdout.split('\n').filter((line) => EMULATOR_SYMBOL.test(line));
}

describe('production and test addons', () => {
  it('the production addon contains no emulator symbol; the test addon does', () => {
    expect(emulatorSymbols(PRODUCTION).slice(0, 5)).toEqual([]);
    // The same check finds them where they are, so the first assertion can fail.
    expect(emulatorSymbols(TEST).length).toBeGreaterThan(10);
  });

  it('the loader rule: unset KVCOMPACT_NATIVE is production, where the test-only functions are absent', () => {
    expect(requestedBuild()).toBe('production');
    expect(native()).toBe(loadNative('production'));
    expect(native()).not.toBe(loadNative('test'));
    expect(() => nativeTest()).toThrowError(/KVCOMPACT_NATIVE=test/);
    // Device 'cuda' in this process is the real one or none, never the emulator.
    const { cuda } = KVCache.devices();
    expect(native().devices().cuda.emulated).toBe(false);
    if (!cuda.available) expect(() => new KVCache({ layers: 1, kvHeads: 1, headDim: 8, device: 'cuda' })).toThrowError(/ignored/);
  });

  it('the production addon ignores KVCOMPACT_CUDA_EMULATION and says so when CUDA is unavailable', () => {
    const prod = loadNative('production');
    const { cuda } = prod.devices();
    expect(cuda.emulationCompiled).toBe(false);
    expect(cuda.emulated).toBe(false);
    if (!cuda.available) expect(cuda.reason).toContain('KVCOMPACT_CUDA_EMULATION is ignored');
    expect((prod as unknown as Record<string, unknown>)['cudaTransferStats']).toBeUndefined();
  });

  it('the test addon emulates device cuda when asked and exports the copy counters', () => {
    const test = loadNative('test');
    const { cuda } = test.devices();
    expect(cuda.emulationCompiled).toBe(true);
    expect(cuda.emulated).toBe(true);
    expect(cuda.available).toBe(true);
    expect(typeof (test as unknown as Record<string, unknown>)['cudaTransferStats']).toBe('function');
  });
});
