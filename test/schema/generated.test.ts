// schema/options.json is the one definition of options, limits, enum names, flag bits and
// error codes: the generated TypeScript and C++ files must be what the generator makes of it
// now, and both layers must accept and refuse exactly the same values at every limit.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVCache, KVCacheError } from '../../lib/index';
import { CACHE_OPTIONS, ERROR_CODES, STORAGE } from '../../lib/generated/schema';
import { native } from '../../lib/native/binding';

const root = join(__dirname, '..', '..');

/** The code of the error fn throws, or 'ok'. */
function outcome(fn: () => unknown): string {
  try {
    const made = fn() as { dispose?: () => void };
    made?.dispose?.();
    return 'ok';
  } catch (e) {
    if (!(e instanceof KVCacheError)) return `not a KVCacheError: ${String(e)}`;
    return e.code;
  }
}

describe('schema', () => {
  it('the generated files are up to date (npm run gen:schema)', () => {
    const r = spawnSync(process.execPath, [join(root, 'scripts/gen-schema.mjs'), '--check'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('the C++ status codes follow the schema error codes (ABORTED included)', () => {
    expect(ERROR_CODES).toContain('ABORTED');
    const status = readFileSync(join(root, 'cpp/include/kvc/status.h'), 'utf8');
    const enumerators = [...status.matchAll(/^\s+k([A-Za-z]+)(?: = 0)?,/gm)].map((m) => m[1]!);
    const screaming = enumerators.map((n) => n.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase());
    expect(screaming).toEqual(['OK', ...ERROR_CODES]);
  });

  it('TypeScript and the native layer agree at every integer limit of the cache options', () => {
    const addon = native();
    // Small shapes so that every accepted cache is cheap; each option is moved alone.
    const base = { layers: 1, kvHeads: 1, headDim: 8, queryHeads: 1, groupSize: 8, threads: 1 };
    const nativeBase = { ...base, keys: 'f16', values: 'f16', rotateKeys: false, rotateValues: false };
    const probes: Record<string, number[]> = {};
    for (const [name, limit] of Object.entries(CACHE_OPTIONS)) {
      if (limit.type !== 'integer' || name === 'maxBytes') continue;
      probes[name] = [limit.min - 1, limit.min, limit.max, limit.max + 1, 1.5, NaN];
    }
    let compared = 0;
    for (const [name, values] of Object.entries(probes)) {
      for (const value of values) {
        let options: Record<string, number> = { ...base, [name]: value };
        // Keep the other rules satisfied so that only the limit decides.
        if (name === 'kvHeads') options = { ...options, queryHeads: value };
        if (name === 'headDim') options = { ...options, groupSize: 2 };
        if (name === 'groupSize') options = { ...options, headDim: Number.isInteger(value) && value >= 2 && value <= 1024 && value % 2 === 0 ? value : 8 };
        if (name === 'layers' && value === CACHE_OPTIONS.layers.max) options.kvHeads = 1;
        const ts = outcome(() => new KVCache(options as never));
        const direct = outcome(() => new addon.NativeCache({ ...nativeBase, ...options } as never));
        expect(direct, `${name} = ${value}: TypeScript says ${ts}, native says ${direct}`).toBe(ts);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(50);
  });

  it('enum names are the only accepted enum values on both sides', () => {
    const addon = native();
    const base = { layers: 1, kvHeads: 1, headDim: 8, threads: 1 };
    for (const [i, name] of STORAGE.entries()) {
      expect(outcome(() => new KVCache({ ...base, keys: name }))).toBe('ok');
      expect(outcome(() => new addon.NativeCache({ ...base, queryHeads: 1, keys: name } as never))).toBe('ok');
      expect(outcome(() => new KVCache({ ...base, keys: i as never }))).toBe('INVALID_ARGUMENT');
      expect(outcome(() => new addon.NativeCache({ ...base, queryHeads: 1, keys: i } as never))).toBe('INVALID_ARGUMENT');
    }
  });
});
