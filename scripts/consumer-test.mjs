// The package as a consumer meets it (npm run test:consumer; run by .ci/run after
// `npm run prebuild`): npm pack, then install the tarball into a fresh project with no
// compiler, make or Python on PATH and no network (npm --offline: any download fails), and there
//   - require it from CommonJS and import it from ESM (one instance, default export, version),
//   - typecheck strict TypeScript under node16 (ESM and CJS files; skipLibCheck off, so the
//     shipped .d.ts files are checked too) and under bundler resolution,
//   - run a short decode loop (chunked prefill, append + attention, attentionBatch),
//   - run `npx kvcompact doctor`,
//   - corrupt the prebuilt binary and `npm rebuild kvcompact`: the install script must refuse
//     with its explanation (what was tried, what is missing, what to run) and no build attempt.
// Prints the tarball size and the time of each step.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const keep = process.argv.includes('--keep');
const work = mkdtempSync(join(tmpdir(), 'kvcompact-consumer-'));
const times = [];
let failed = false;

function step(name, fn) {
  const t = performance.now();
  try {
    fn();
    times.push([name, performance.now() - t]);
    console.log(`ok   ${name} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  } catch (error) {
    failed = true;
    console.log(`FAIL ${name}: ${error.message}`);
    throw error;
  }
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options });
  if (r.error) throw r.error;
  if (r.status !== 0 && !options.allowFailure) {
    throw new Error(`${[cmd, ...args].join(' ')} exited ${r.status}\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}

// npm's own entry points, run by this node: the consumer's PATH holds node and sh only.
function npmCli() {
  const prefix = spawnSync('npm', ['prefix', '-g'], { encoding: 'utf8' }).stdout.trim();
  const candidates = [join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin'), join(prefix, 'lib', 'node_modules', 'npm', 'bin')];
  for (const c of candidates) if (existsSync(join(c, 'npm-cli.js'))) return c;
  throw new Error('npm-cli.js not found next to node');
}

const bin = join(work, 'bin');
mkdirSync(bin);
symlinkSync(process.execPath, join(bin, 'node'));
symlinkSync('/bin/sh', join(bin, 'sh'));
const npmBin = npmCli();
// A bare environment: only what is set here reaches npm and the package.
const env = {
  HOME: join(work, 'home'),
  PATH: bin,
  npm_config_cache: process.env.npm_config_cache || join(process.env.HOME || '/root', '.npm'),
  // Offline: npm answers from its cache only and fails on anything it would have to download.
  npm_config_offline: 'true',
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
  KVCOMPACT_SHARED_DIR: '',
};
mkdirSync(env.HOME);
const npm = (args, cwd, options) => run(process.execPath, [join(npmBin, 'npm-cli.js'), ...args], { cwd, env, ...options });
const node = (args, cwd, options) => run(process.execPath, args, { cwd, env, ...options });

try {
  for (const tool of ['c++', 'g++', 'cc', 'make', 'python3']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status === 0) throw new Error(`${tool} is on the consumer PATH`);
  }

  let tarball;
  step('npm pack (runs prepare: compiles the TypeScript)', () => {
    const r = run('npm', ['pack', '--json', '--pack-destination', work], { cwd: root });
    const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('[')))[0];
    tarball = join(work, info.filename);
    const files = info.files.map((f) => f.path);
    const must = ['prebuilds/linux-x64/kvcompact.napi.glibc.node', 'prebuilds/linux-x64/manifest.json', 'LICENSE', 'README.md', 'bin/kvcompact.cjs',
      'dist/cjs/index.js', 'dist/cjs/index.d.ts', 'dist/esm/index.mjs', 'dist/esm/index.d.mts', 'scripts/install.cjs', 'binding.gyp', 'cuda/cuda_stub.cpp'];
    for (const f of must) if (!files.includes(f)) throw new Error(`the tarball lacks ${f}`);
    const banned = files.filter((f) => /^(test|bench|examples|docs)\/|^cuda\/(emu|tests|kernels|backend|bench)\/|\.cu$|^cpp\/testing\/|^build\//.test(f));
    if (banned.length) throw new Error(`the tarball holds test, emulator or build files: ${banned.slice(0, 5).join(', ')}`);
    console.log(`     ${info.filename}: ${(info.size / 1e6).toFixed(2)} MB packed, ${(info.unpackedSize / 1e6).toFixed(2)} MB unpacked, ${info.entryCount} files`);
  });

  // kvcompact's own dependencies, packed from this checkout's node_modules: the npm cache of a
  // machine that ran `npm ci` holds their tarballs but not the registry metadata a fresh
  // install resolves versions with, and this install may not reach the registry.
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const deps = {};
  for (const name of Object.keys(pkg.dependencies ?? {})) {
    const r = run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work, join(root, 'node_modules', name)], { cwd: work });
    deps[name] = `file:../${JSON.parse(r.stdout.slice(r.stdout.indexOf('[')))[0].filename}`;
  }
  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'commonjs', dependencies: deps }, null, 2));
  step('npm install <tarball> --offline (no compiler, no network)', () => {
    const r = npm(['install', '--foreground-scripts', '--no-package-lock', tarball], app);
    if (/gyp|g\+\+|make:/.test(r.stdout + r.stderr)) throw new Error(`install tried to build:\n${r.stdout}\n${r.stderr}`);
    if (existsSync(join(app, 'node_modules', 'kvcompact', 'build'))) throw new Error('install created build/: it compiled instead of using the prebuilt binary');
  });

  writeFileSync(
    join(app, 'cjs.cjs'),
    `const assert = require('node:assert');
const kv = require('kvcompact');
assert.strictEqual(typeof kv.KVCache, 'function');
assert.strictEqual(kv.version, require('kvcompact/package.json').version);
assert.strictEqual(kv.default.KVCache, kv.KVCache);
const d = kv.KVCache.devices();
assert.strictEqual(d.cpu.available, true);
console.log('cjs ok', kv.version, d.cpu.simd, 'cuda compiled', d.cuda.compiled, d.cuda.reason || '');
`,
  );
  writeFileSync(
    join(app, 'esm.mjs'),
    `import assert from 'node:assert';
import { createRequire } from 'node:module';
import kvcompact, { KVCache, KVCacheError, version } from 'kvcompact';
const cjs = createRequire(import.meta.url)('kvcompact');
assert.strictEqual(KVCache, cjs.KVCache, 'ESM and CJS share one instance');
assert.strictEqual(kvcompact.KVCache, KVCache);
assert.strictEqual(version, cjs.version);
try { new KVCache({ layers: 0, kvHeads: 1, headDim: 8 }); assert.fail('accepted layers 0'); } catch (e) { assert.ok(e instanceof KVCacheError && e.code === 'INVALID_ARGUMENT'); }
console.log('esm ok');
`,
  );
  writeFileSync(
    join(app, 'decode.mjs'),
    `import assert from 'node:assert';
import { KVCache } from 'kvcompact';
const layers = 2, kvHeads = 2, queryHeads = 8, headDim = 64, prefill = 48, steps = 32;
const cache = new KVCache({ layers, kvHeads, queryHeads, headDim, keys: 'int8', values: 'int8', maxBytes: 64 << 20 });
let s = 12345;
const rand = (n) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1);
const a = cache.createSequence(), b = cache.createSequence();
for (const seq of [a, b]) for (let layer = 0; layer < layers; layer++) {
  for (let t = 0; t < prefill; t += 16) {        // prefill in chunks of 16 tokens
    seq.append(layer, rand(16 * kvHeads * headDim), rand(16 * kvHeads * headDim));
    seq.attention(layer, rand(16 * queryHeads * headDim));
  }
}
const t0 = performance.now();
for (let step = 0; step < steps; step++) {
  for (let layer = 0; layer < layers; layer++) {
    for (const seq of [a, b]) seq.append(layer, rand(kvHeads * headDim), rand(kvHeads * headDim));
    const q = rand(2 * queryHeads * headDim);
    const batch = cache.attentionBatch(layer, [a, b], q);
    const one = a.attention(layer, q.subarray(0, queryHeads * headDim));
    for (let i = 0; i < one.length; i++) assert.ok(Math.abs(one[i] - batch[i]) <= 1e-6, 'attentionBatch matches attention');
    assert.ok(batch.every(Number.isFinite));
  }
}
const ms = performance.now() - t0;
assert.strictEqual(a.length(0, 0), prefill + steps);
const st = cache.stats();
console.log('decode ok:', steps, 'steps x', layers, 'layers x 2 sequences in', ms.toFixed(1), 'ms;', st.bytesUsed, 'bytes used');
cache.dispose();
`,
  );
  step('require from CommonJS', () => process.stdout.write('     ' + node(['cjs.cjs'], app).stdout));
  step('import from ESM', () => process.stdout.write('     ' + node(['esm.mjs'], app).stdout));
  step('decode loop', () => process.stdout.write('     ' + node(['decode.mjs'], app).stdout));

  // TypeScript: the repository's compiler, the consumer's files and tsconfig.
  const types = `import type { Devices, KVCacheOptions, CompactionReport } from 'kvcompact';
const options: KVCacheOptions = { layers: 1, kvHeads: 1, headDim: 8, keys: 'int8' };
export function devices(d: Devices): string { return d.cuda.available ? d.cuda.name ?? '' : d.cuda.reason ?? ''; }
export function freed(r: CompactionReport): number { return r.bytesFreed; }
export { options };
`;
  const use = (imp) => `${imp}
${types}
export function check(): string {
  const cache = new KVCache(options);
  // @ts-expect-error internal members are stripped from the published types
  void cache.native;
  const emulated: boolean = KVCache.devices().cuda.emulated;
  const v: string = version + kv.version;
  return String(emulated) + v + String(kv.KVCache === KVCache);
}
`;
  writeFileSync(join(app, 'esm-node16.mts'), use(`import kv, { KVCache, version } from 'kvcompact';`));
  writeFileSync(join(app, 'cjs-node16.cts'), use(`import kv, { KVCache, version } from 'kvcompact';`));
  writeFileSync(join(app, 'cjs-require.cts'), `import kv = require('kvcompact');\nexport const v: string = kv.version;\nexport const C: typeof kv.KVCache = kv.default.KVCache;\n`);
  writeFileSync(join(app, 'bundler.ts'), use(`import kv, { KVCache, version } from 'kvcompact';`));
  const base = { strict: true, noEmit: true, skipLibCheck: false, esModuleInterop: true, target: 'ES2022', lib: ['ES2023'], types: ['node'], typeRoots: [join(root, 'node_modules', '@types')] };
  writeFileSync(join(app, 'tsconfig.node16.json'), JSON.stringify({ compilerOptions: { ...base, module: 'node16', moduleResolution: 'node16' }, files: ['esm-node16.mts', 'cjs-node16.cts', 'cjs-require.cts'] }));
  // The node16 pass checks the shipped .d.ts/.d.mts themselves (skipLibCheck off); the bundler
  // pass checks how they resolve and type a consumer's file, without checking them again.
  writeFileSync(join(app, 'tsconfig.bundler.json'), JSON.stringify({ compilerOptions: { ...base, skipLibCheck: true, module: 'esnext', moduleResolution: 'bundler' }, files: ['bundler.ts'] }));
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  step('typecheck strict TS, node16 resolution (ESM + CJS)', () => node([tsc, '-p', 'tsconfig.node16.json'], app));
  step('typecheck strict TS, bundler resolution', () => node([tsc, '-p', 'tsconfig.bundler.json'], app));

  step('npx kvcompact doctor', () => {
    const r = node([join(npmBin, 'npx-cli.js'), '--no-install', 'kvcompact', 'doctor'], app);
    process.stdout.write(r.stdout.trimEnd().replace(/^/gm, '     ') + '\n');
    if (!/self-test: cpu: passed/.test(r.stdout) || !/prebuilt/.test(r.stdout)) throw new Error('doctor did not report a passing self-test on the prebuilt binary');
  });

  step('a rejected prebuild: npm rebuild explains and does not try to compile', () => {
    const file = join(app, 'node_modules', 'kvcompact', 'prebuilds', 'linux-x64', 'kvcompact.napi.glibc.node');
    writeFileSync(file, Buffer.alloc(4096, 0x42));
    const r = npm(['rebuild', 'kvcompact', '--foreground-scripts'], app, { allowFailure: true });
    const text = r.stdout + r.stderr;
    if (r.status === 0) throw new Error('npm rebuild succeeded with a corrupt prebuilt binary and no compiler');
    for (const want of ['no prebuilt binary loads', 'kvcompact.napi.glibc.node: not a loadable binary', 'a C++17 compiler', 'npm rebuild kvcompact', 'KVCOMPACT_NATIVE=']) {
      if (!text.includes(want)) throw new Error(`the install message lacks "${want}":\n${text}`);
    }
    const imp = node(['cjs.cjs'], app, { allowFailure: true });
    if (imp.status === 0 || !imp.stderr.includes('kvcompact could not load its native addon')) throw new Error(`import did not fail with the report:\n${imp.stderr}`);
  });
  const tgz = statSync(tarball).size;
  console.log(`consumer test passed: tarball ${(tgz / 1e6).toFixed(2)} MB; ${times.map(([n, ms]) => `${n.split(' (')[0]} ${(ms / 1000).toFixed(1)} s`).join('; ')}`);
} catch {
  failed = true;
} finally {
  if (!keep) rmSync(work, { recursive: true, force: true });
  else console.log(`kept ${work}`);
}
process.exit(failed ? 1 : 0);
