// npm run prebuild: turns the CMake build (npm run build:native) into the binary the package
// ships, prebuilds/<platform>-<arch>/kvcompact.napi.glibc.node, named as node-gyp-build
// expects (N-API, glibc), with manifest.json beside it. It compiles nothing: it checks that
// the build is the production addon with the CUDA backend (no emulator, C++ runtime linked
// in), strips it, checks the stripped file (libraries, glibc symbol versions, GPU code), and
// loads it in a fresh process on this machine, which has no GPU.
//   npm run prebuild [-- --allow-cpu-only]   (without nvcc the CUDA backend is missing: refused unless allowed)
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

import { checkBinary } from './check-binary.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const allowCpuOnly = process.argv.includes('--allow-cpu-only');
const source = join(root, 'build', 'Release', 'kvcompact.node');
const fail = (message) => {
  console.error(`prebuild: ${message}`);
  process.exit(1);
};

if (process.platform !== 'linux' || process.arch !== 'x64') fail(`only linux-x64 prebuilds are made so far (this is ${process.platform}-${process.arch})`);
if (!existsSync(source)) fail(`${relative(root, source)} is missing: run \`npm run build:native\` first (the CMake build)`);

// 1. What was built: asked of the addon itself (in a child, so this process loads nothing).
const infoOf = (file) => {
  const r = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(file)}); console.log(JSON.stringify({ build: a.buildInfo(), devices: a.devices() }))`], {
    encoding: 'utf8',
    env: { ...process.env, KVCOMPACT_CUDA_EMULATION: '' },
  });
  if (r.status !== 0) fail(`${file} does not load: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout);
};
const { build } = infoOf(source);
if (build.buildSystem !== 'cmake') fail(`${relative(root, source)} is a ${build.buildSystem} build; the prebuild is the CMake build (npm run build:native)`);
if (build.cudaEmulationCompiled) fail('the addon contains the CUDA emulator; the prebuild must be the production addon');
if (!build.staticCxxRuntime) fail('the addon links libstdc++ dynamically (CMakeLists.txt links it statically for GCC/Clang on Linux)');
if (!build.cudaCompiled && !allowCpuOnly) fail('the CMake build has no CUDA backend (nvcc was not found); pass --allow-cpu-only to ship a CPU-only prebuild');

// 2. Stage: one binary per platform directory (see README, "Prebuilt binaries").
const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
mkdirSync(dir, { recursive: true });
for (const f of readdirSync(dir)) rmSync(join(dir, f), { force: true });
const name = 'kvcompact.napi.glibc.node';
const dest = join(dir, name);
const sourceCheck = checkBinary(source); // symbols (emulator check) need the unstripped file
const strip = spawnSync('strip', ['--strip-unneeded', '-o', dest, source], { encoding: 'utf8' });
if (strip.status !== 0) {
  console.warn(`prebuild: strip failed (${strip.stderr || strip.error}); shipping the unstripped file`);
  copyFileSync(source, dest);
}

// 3. Check the shipped file.
const check = checkBinary(dest);
const problems = [...sourceCheck.problems.filter((p) => p.startsWith('contains emulator')), ...check.problems];
if (build.cudaCompiled) {
  const gpu = check.gpu;
  if (!gpu) problems.push('no .nv_fatbin section (no GPU code)');
  else {
    for (const sm of ['sm_80', 'sm_90']) if (!gpu.sass.includes(sm)) problems.push(`no ${sm} machine code`);
    if (!gpu.ptx.includes('compute_90')) problems.push('no compute_90 PTX (forward compatibility)');
  }
}
const loaded = infoOf(dest);
if (loaded.devices.cuda.compiled !== build.cudaCompiled) problems.push('the stripped file reports a different CUDA build');
if (problems.length) fail(`${relative(root, dest)}:\n  ${problems.join('\n  ')}`);

// 4. The manifest: what the loader checks before loading (minGlibc) and what doctor prints.
const bytes = readFileSync(dest);
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const manifest = {
  package: `${pkg.name}@${pkg.version}`,
  binaries: [
    {
      file: name,
      platform: process.platform,
      arch: process.arch,
      libc: 'glibc',
      minGlibc: check.minGlibc,
      needed: check.needed,
      cudaArchitectures: build.cudaArchitectures,
      gpuCode: check.gpu,
      compiler: build.compiler,
      bytes: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
    },
  ],
};
writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;
console.log(`prebuild: ${relative(root, dest)}`);
console.log(`  ${mb(bytes.length)} (gzip -9: ${mb(gzipSync(bytes, { level: 9 }).length)}; unstripped ${mb(statSync(source).size)})`);
console.log(`  CUDA: ${build.cudaCompiled ? `compiled (${build.cudaArchitectures}; machine code ${check.gpu.sass.join(', ')}, PTX ${check.gpu.ptx.join(', ')})` : 'not compiled'}; on this machine: ${loaded.devices.cuda.available ? loaded.devices.cuda.name : loaded.devices.cuda.reason}`);
console.log(`  needs: ${check.needed.join(', ')}; glibc >= ${check.minGlibc} (${check.newestGlibcSymbols.join(', ')})`);
// Resolved as a consumer's node-gyp-build would, build/ aside (it reads PREBUILDS_ONLY when
// it is first required): the staged file must be the one it finds.
process.env.PREBUILDS_ONLY = '1';
const found = createRequire(import.meta.url)('node-gyp-build').path(root);
if (found !== dest) fail(`node-gyp-build resolves ${found}, not ${dest}`);
