// Portability facts of a Linux .node, read with readelf/objdump/nm (binutils) and from the
// (the fatbinary's own headers): the shared libraries it needs, the highest glibc symbol
// version it names (= the oldest glibc it loads on), whether any libstdc++/libgcc symbol
// version leaks in, emulator symbols, and the GPU code in its fatbinary.
//   node scripts/check-binary.mjs <file.node> [--json]
// Exits 1 when the file would not be portable (a rule below fails).
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

// Libraries every glibc system has; anything else (libstdc++, libgcc_s, libcudart) must be
// linked in.
export const ALLOWED_NEEDED = new Set(['libc.so.6', 'libm.so.6', 'libpthread.so.0', 'libdl.so.2', 'librt.so.1', 'ld-linux-x86-64.so.2']);
// What Node looks up in a .node; nothing else should be visible.
export const ALLOWED_EXPORTS = new Set(['napi_register_module_v1', 'node_api_module_get_api_version_v1']);
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

/**
 * The GPU code in the .nv_fatbin section, read from the fatbinary headers (the layout
 * cuobjdump reads: a 16-byte header with magic 0xBA55ED50, then entries of kind 1 = PTX or
 * 2 = machine code, each naming its architecture at byte 28): { sass: ['sm_80', ...],
 * ptx: ['compute_90'], bytes: { 'sm_80': n, ... } }, or null without CUDA code.
 */
export function fatbinContents(file) {
  const sections = run('readelf', ['-S', '-W', file]);
  const m = /\.nv_fatbin\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)/.exec(sections.out);
  if (!m) return null;
  const offset = parseInt(m[1], 16), size = parseInt(m[2], 16);
  const fd = openSync(file, 'r');
  const sec = Buffer.alloc(size);
  readSync(fd, sec, 0, size, offset);
  closeSync(fd);
  const sass = new Set(), ptx = new Set(), bytes = {};
  for (let p = 0; p + 16 <= sec.length; ) {
    if (sec.readUInt32LE(p) !== 0xba55ed50) {
      p += 8; // fatbinaries are 8-byte aligned in the section
      continue;
    }
    const headerSize = sec.readUInt16LE(p + 6);
    const end = p + headerSize + Number(sec.readBigUInt64LE(p + 8));
    for (let q = p + headerSize; q < end; ) {
      const kind = sec.readUInt16LE(q), entryHeader = sec.readUInt32LE(q + 4), payload = Number(sec.readBigUInt64LE(q + 8));
      const arch = sec.readUInt32LE(q + 28);
      const name = kind === 1 ? `compute_${arch}` : `sm_${arch}`;
      (kind === 1 ? ptx : sass).add(name);
      bytes[name] = (bytes[name] ?? 0) + payload;
      q += entryHeader + payload;
    }
    p = end;
  }
  return { sass: [...sass].sort(), ptx: [...ptx].sort(), bytes };
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
  const extra = exports.filter((name) => !ALLOWED_EXPORTS.has(name));
  if (extra.length) problems.push(`exports ${extra.length} symbols besides the N-API entry points (e.g. ${extra[0]}): they could bind to another copy of the C++ library`);
  const all = run('nm', ['-C', file]);
  const emulator = all.ok ? all.out.split('\n').filter((l) => EMULATOR_SYMBOL.test(l)) : [];
  if (emulator.length) problems.push(`contains emulator code (${emulator.length} symbols, e.g. ${emulator[0].trim()})`);

  const gpu = fatbinContents(file);
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
    if (r.gpu) console.log(`  GPU code: machine code ${r.gpu.sass.join(', ') || 'none'}; PTX ${r.gpu.ptx.join(', ') || 'none'} (bytes ${JSON.stringify(r.gpu.bytes)})`);
    for (const p of r.problems) console.log(`  PROBLEM: ${p}`);
  }
  process.exit(r.problems.length ? 1 : 0);
}
