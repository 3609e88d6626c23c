// Portability facts of a Linux .node, read with readelf/objdump/nm (binutils) and cuobjdump
// (CUDA toolkit, when present): the shared libraries it needs, the highest glibc symbol
// version it names (= the oldest glibc it loads on), whether any libstdc++/libgcc symbol
// version leaks in, emulator symbols, and the GPU code in its fatbinary.
//   node scripts/check-binary.mjs <file.node> [--json]
// Exits 1 when the file would not be portable (a rule below fails).
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';

// Libraries every glibc system has; anything else (libstdc++, libgcc_s, libcudart) must be
// linked in.
export const ALLOWED_NEEDED = new Set(['libc.so.6', 'libm.so.6', 'libpthread.so.0', 'libdl.so.2', 'librt.so.1', 'ld-linux-x86-64.so.2']);
// Names only emulator code defines (test/cuda/builds.test.ts uses the same rule).
export const EMULATOR_SYMBOL = /\bkvc_emu::|\bcuda_emu::|createEmulatedCudaBackend/;

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 512 * 1024 * 1024 });
  if (r.error) return { ok: false, out: '', err: `${cmd}: ${r.error.message}` };
  return { ok: r.status === 0, out: r.stdout, err: r.stderr };
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number), pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

/** Reads the facts; `problems` lists every broken rule. */
export function checkBinary(file) {
  const problems = [];
  const dyn = run('readelf', ['-d', '-W', file]);
  if (!dyn.ok) throw new Error(`readelf -d ${file} failed: ${dyn.err}`);
  const needed = [...dyn.out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  for (const lib of needed) if (!ALLOWED_NEEDED.has(lib)) problems.push(`needs ${lib} (link it statically)`);

  const syms = run('objdump', ['-T', '-w', file]);
  if (!syms.ok) throw new Error(`objdump -T ${file} failed: ${syms.err}`);
  const versions = new Map(); // version -> symbols
  for (const line of syms.out.split('\n')) {
    const m = /\b(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9.]+)\)?\s+(\S+)\s*$/.exec(line);
    if (!m || !/\*UND\*/.test(line)) continue;
    const key = `${m[1]}_${m[2]}`;
    if (!versions.has(key)) versions.set(key, []);
    versions.get(key).push(m[3]);
  }
  const glibc = [...versions.keys()].filter((k) => k.startsWith('GLIBC_')).map((k) => k.slice(6)).sort(compareVersions);
  const minGlibc = glibc.at(-1) ?? '';
  const newest = versions.get(`GLIBC_${minGlibc}`) ?? [];
  for (const k of versions.keys()) if (!k.startsWith('GLIBC_')) problems.push(`names ${k} symbols (${versions.get(k).slice(0, 3).join(', ')}): libstdc++/libgcc is not linked in`);

  const exported = run('nm', ['-D', '--defined-only', file]);
  const exports = exported.ok ? exported.out.split('\n').filter(Boolean).map((l) => l.split(' ').at(-1)) : [];
  const all = run('nm', ['-C', file]);
  const emulator = all.ok ? all.out.split('\n').filter((l) => EMULATOR_SYMBOL.test(l)) : [];
  if (emulator.length) problems.push(`contains emulator code (${emulator.length} symbols, e.g. ${emulator[0].trim()})`);

  let gpu = null;
  const cu = run('cuobjdump', ['--list-elf', '--list-ptx', file]);
  if (cu.ok) {
    const sass = [...new Set([...cu.out.matchAll(/\.(sm_\d+)\.cubin/g)].map((m) => m[1]))].sort();
    const ptx = [...new Set([...cu.out.matchAll(/\.(sm_\d+)\.ptx/g)].map((m) => m[1].replace('sm_', 'compute_')))].sort();
    gpu = { sass, ptx };
  } else if (/does not contain device code|no fatbin/i.test(cu.out + cu.err)) {
    gpu = { sass: [], ptx: [] };
  }
  return { file, needed, minGlibc, newestGlibcSymbols: newest.slice(0, 8), exports, gpu, problems };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node scripts/check-binary.mjs <file.node> [--json]');
    process.exit(2);
  }
  const r = checkBinary(file);
  if (process.argv.includes('--json')) console.log(JSON.stringify(r, null, 2));
  else {
    console.log(`${file}`);
    console.log(`  needs libraries: ${r.needed.join(', ')}`);
    console.log(`  minimum glibc: ${r.minGlibc} (symbols at that version: ${r.newestGlibcSymbols.join(', ')})`);
    console.log(`  exports: ${r.exports.join(', ')}`);
    if (r.gpu) console.log(`  GPU code: machine code ${r.gpu.sass.join(', ') || 'none'}; PTX ${r.gpu.ptx.join(', ') || 'none'}`);
    for (const p of r.problems) console.log(`  PROBLEM: ${p}`);
  }
  process.exit(r.problems.length ? 1 : 0);
}
