// The loader's report when no binary loads, on real failures: a package directory whose
// prebuilds are a corrupt .node, one built for musl, and one whose manifest asks for a newer
// glibc than any system has; and an import of kvcompact in a fresh process pointed at a
// corrupt file, which must fail at import with the same report.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import kvcompact, { KVCache, version, type Devices } from '../../lib/index';
import { KVCacheError } from '../../lib/errors';
import { loadNative } from '../../lib/native/binding';
import { describeHost, explainLoadError, loadFailureMessage, loadFirst, productionCandidates } from '../../lib/native/locate';

const ROOT = path.resolve(__dirname, '../..');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'kvcompact-loader-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function fakePackage(): string {
  const root = path.join(tmp, `pkg-${Math.random().toString(36).slice(2)}`);
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'kvcompact', version: '0.0.0' }));
  // Random bytes, not an ELF file: dlopen refuses it.
  writeFileSync(path.join(dir, 'kvcompact.napi.glibc.node'), Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 131 + 7) & 0xff)));
  writeFileSync(path.join(dir, 'kvcompact.napi.musl.node'), 'not used');
  writeFileSync(path.join(dir, 'kvcompact.napi.node'), 'not used');
  writeFileSync(
    path.join(dir, 'manifest.json'),
    JSON.stringify({ binaries: [{ file: 'kvcompact.napi.node', minGlibc: '99.0' }] }),
  );
  return root;
}

describe('loader report', () => {
  const host = describeHost();

  it('lists the host, every candidate with its reason, and commands that work in a consumer project', () => {
    expect(host.libc, 'these tests run on glibc Linux').toBe('glibc');
    const root = fakePackage();
    const attempts = productionCandidates(root, host);
    const result = loadFirst(attempts, (file) => createRequire(__filename)(file) as unknown);
    expect(result.ok).toBe(false);
    const message = loadFailureMessage('production build', result.attempts, root, host);
    const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
    // The host, as node-gyp-build matches it.
    expect(message).toContain(`${process.platform}-${process.arch}, glibc ${host.glibcVersion}, Node ${process.version} (ABI ${process.versions.modules}, N-API ${process.versions.napi})`);
    // Each file with its own reason: the corrupt one was loaded and refused by the system, the
    // glibc one was not loaded at all, the musl one does not match.
    expect(message).toMatch(new RegExp(`${path.join(dir, 'kvcompact.napi.glibc.node').replace(/[.]/g, '\\.')} \\(prebuild\\): not a loadable binary for this platform/arch`));
    expect(message).toContain(`${path.join(dir, 'kvcompact.napi.node')} (prebuild): needs glibc 99.0 or newer; this system has glibc ${host.glibcVersion}`);
    expect(message).toContain(`${path.join(dir, 'kvcompact.napi.musl.node')} (prebuild): built for musl, this system is glibc`);
    // Commands that work in a consumer's project, not in a checkout.
    expect(message).toContain('npm rebuild kvcompact');
    expect(message).toContain('KVCOMPACT_NATIVE=');
    expect(message).toContain('npm run build:native');
    expect(message).toMatch(/bundlers .* must leave kvcompact external/);
    expect(message).not.toContain('npx node-gyp rebuild');
  });

  it('tries the next candidate when one fails, and says which loaded', () => {
    const root = fakePackage();
    const good = path.join(root, 'build', 'Release', 'kvcompact.node');
    const attempts = [{ file: good, origin: 'source build' as const }, ...productionCandidates(root, host)];
    const loaded = loadFirst(attempts, (file) => {
      if (file !== good) throw new Error('unexpected');
      return { file };
    });
    expect(loaded.ok && loaded.file).toBe(good);
    const reversed = loadFirst([...productionCandidates(root, host), attempts[0]!], (file) => {
      if (file !== good) throw new Error(`${file}: invalid ELF header`);
      return { file };
    });
    expect(reversed.ok).toBe(true);
    expect(reversed.attempts.filter((a) => a.error).length).toBe(3);
  });

  it('names the reasons people meet', () => {
    expect(explainLoadError("/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /x/kvcompact.node)")).toMatch(/^needs glibc 2\.38 or newer/);
    expect(explainLoadError("/usr/lib/libstdc++.so.6: version `GLIBCXX_3.4.32' not found")).toMatch(/^needs a newer libstdc\+\+/);
    expect(explainLoadError('/x/kvcompact.node: wrong ELF class: ELFCLASS32')).toMatch(/^not a loadable binary/);
    expect(explainLoadError('The module was compiled against a different Node.js version using NODE_MODULE_VERSION 108.')).toMatch(/^built for another Node version/);
    expect(explainLoadError('something else\nsecond line')).toBe('something else');
  });

  it('a KVCOMPACT_NATIVE path that does not load is a KVCacheError naming the file and the reason', () => {
    const bad = path.join(tmp, 'bad.node');
    writeFileSync(bad, 'not a binary');
    let error: unknown;
    try {
      loadNative({ path: bad });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KVCacheError);
    expect((error as KVCacheError).code).toBe('INTERNAL');
    expect((error as Error).message).toContain(`${bad} (environment): `);
    expect((error as Error).message).toContain('npm rebuild kvcompact');
  });

  it('importing kvcompact fails at import, not at first use, with the report', () => {
    const bad = path.join(tmp, 'import.node');
    writeFileSync(bad, Buffer.alloc(64, 0x7f));
    const script = path.join(tmp, 'import.ts');
    writeFileSync(script, `import { KVCache } from ${JSON.stringify(path.join(ROOT, 'lib', 'index.ts'))};\nconsole.log('imported', typeof KVCache);\n`);
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, KVCOMPACT_NATIVE: bad },
    });
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('imported');
    expect(r.stderr).toContain('kvcompact could not load its native addon');
    expect(r.stderr).toContain(`${bad} (environment): `);
  });
});

describe('package entry', () => {
  it('version is the package.json version; the default export holds the named ones', () => {
    expect(version).toBe((createRequire(__filename)(path.join(ROOT, 'package.json')) as { version: string }).version);
    expect(kvcompact.KVCache).toBe(KVCache);
    expect(kvcompact.version).toBe(version);
  });

  it('the Devices type names exactly what devices() returns', () => {
    // Records over keyof: the compiler rejects a missing or an extra key, so these lists are
    // the type's keys; the runtime object must use only them and have every required one.
    const cpuKeys: Record<keyof Devices['cpu'], boolean> = { available: true, threads: true, simd: true, fastKernels: true };
    const cudaKeys: Record<keyof Devices['cuda'], boolean> = {
      available: true, compiled: true, emulationCompiled: true, emulated: true, reason: false, name: false,
      devices: false, totalMemory: false, computeCapability: false, runtimeVersion: false, driverVersion: false,
    };
    const d = KVCache.devices();
    for (const [part, keys] of [[d.cpu, cpuKeys], [d.cuda, cudaKeys]] as const) {
      for (const k of Object.keys(part)) expect(Object.keys(keys), `runtime key ${k}`).toContain(k);
      for (const [k, required] of Object.entries(keys)) if (required) expect(part, `required key ${k}`).toHaveProperty(k);
    }
    expect(Object.keys(d).sort()).toEqual(['cpu', 'cuda']);
  });

  it('buildInfo() of the loaded addon describes the build', () => {
    const info = loadNative('production').buildInfo();
    expect(['cmake', 'node-gyp']).toContain(info.buildSystem);
    expect(info.cudaEmulationCompiled).toBe(false);
    expect(info.cudaCompiled).toBe(KVCache.devices().cuda.compiled);
    if (info.buildSystem === 'cmake') expect(info.staticCxxRuntime).toBe(process.platform === 'linux');
    if (info.cudaCompiled) expect(info.cudaArchitectures).toMatch(/80/);
  });
});
