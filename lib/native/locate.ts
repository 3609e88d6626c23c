// Finding and loading the production .node, with a record of every file tried and why it
// failed, so that a failure explains itself (the message names the host, the files, the
// reasons and the commands that fix it). Used by binding.ts, by `npx kvcompact doctor` and by
// the install script (scripts/install.cjs), so it depends on Node built-ins and
// node-gyp-build only.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';

/** The package root (holds kvcompact's package.json), from lib/native or dist/cjs/native. */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, 'package.json');
    if (fs.existsSync(candidate)) {
      try {
        if ((JSON.parse(fs.readFileSync(candidate, 'utf8')) as { name?: string }).name === 'kvcompact') return dir;
      } catch {
        // not ours; keep walking up
      }
    }
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '..', '..');
}

/** What a prebuilt binary has to match. */
export interface Host {
  platform: string;
  arch: string;
  /** 'glibc' or 'musl' (Linux), '' elsewhere */
  libc: string;
  /** glibc version of the running process, e.g. '2.36' ('' when not glibc) */
  glibcVersion: string;
  node: string;
  /** NODE_MODULE_VERSION: what a non-N-API addon would have to match */
  abi: string;
  napi: string;
}

/**
 * The running host. libc is decided as node-gyp-build decides it (musl on Alpine), so that
 * both pick the same prebuilds; the glibc version comes from a diagnostic report, which costs
 * tens of milliseconds, so the import path (`withGlibcVersion` false) skips it and only
 * messages ask for it.
 */
export function describeHost(withGlibcVersion = true): Host {
  let glibcVersion = '';
  let libc = '';
  if (process.platform === 'linux') {
    libc = fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
    if (withGlibcVersion && libc === 'glibc') {
      const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
      glibcVersion = header?.glibcVersionRuntime ?? '';
    }
  }
  return {
    platform: process.platform,
    arch: process.arch,
    libc,
    glibcVersion,
    node: process.version,
    abi: process.versions.modules ?? '',
    napi: process.versions.napi ?? '',
  };
}

export function hostLine(h: Host): string {
  const libc = h.libc ? `, ${h.libc}${h.glibcVersion ? ' ' + h.glibcVersion : ''}` : '';
  return `${h.platform}-${h.arch}${libc}, Node ${h.node} (ABI ${h.abi}, N-API ${h.napi})`;
}

/** One file the loader considered. */
export interface Attempt {
  file: string;
  /** 'environment' (KVCOMPACT_NATIVE), 'source build' (build/Release) or 'prebuild' */
  origin: 'environment' | 'source build' | 'prebuild';
  /** Why it was not used; undefined for the file that loaded. */
  error?: string;
}

/** A prebuild's manifest (prebuilds/<platform>-<arch>/manifest.json, written by npm run prebuild). */
export interface PrebuildManifest {
  file: string;
  platform: string;
  arch: string;
  libc: string;
  /** Highest GLIBC_x.y symbol version the binary needs. */
  minGlibc: string;
  cudaArchitectures: string;
  bytes: number;
  sha256: string;
}

export function readManifest(dir: string): PrebuildManifest[] {
  try {
    const parsed = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { binaries?: PrebuildManifest[] };
    return Array.isArray(parsed.binaries) ? parsed.binaries : [];
  } catch {
    return [];
  }
}

interface NodeGypBuild {
  parseTags(file: string): { file: string; libc?: string } | undefined;
  matchTags(runtime: string, abi: string): (tags: unknown) => boolean;
  compareTags(runtime: string): (a: unknown, b: unknown) => number;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number), pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * The production candidates in the order they are tried: build/Release/kvcompact.node (a build
 * from source, as node-gyp-build prefers it), then the prebuilds for this platform and arch,
 * most specific first by node-gyp-build's own tag rules. Prebuilds for another libc, or (when
 * `host` carries the glibc version) that need a newer glibc than this process has
 * (manifest.json), come back with their reason set and are not loaded. Without the version,
 * such a prebuild is tried, and dlopen's error names the glibc version it lacks.
 */
export function productionCandidates(root: string, host: Host = describeHost(false)): Attempt[] {
  const out: Attempt[] = [];
  for (const config of ['Release', 'Debug']) {
    const file = path.join(root, 'build', config, 'kvcompact.node');
    if (fs.existsSync(file)) out.push({ file, origin: 'source build' });
  }
  const dir = path.join(root, 'prebuilds', `${host.platform}-${host.arch}`);
  let files: string[] = [];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.node'));
  } catch {
    // no prebuild for this platform
  }
  const ngb = createRequire(__filename)('node-gyp-build') as NodeGypBuild;
  const runtime = process.versions['electron'] ? 'electron' : 'node';
  const tags = files.map((f) => ngb.parseTags(f)).filter((t): t is NonNullable<typeof t> => t !== undefined);
  const manifests = new Map(readManifest(dir).map((m) => [m.file, m]));
  const matching = tags.filter(ngb.matchTags(runtime, host.abi)).sort(ngb.compareTags(runtime));
  for (const t of matching) {
    const file = path.join(dir, t.file);
    const needs = manifests.get(t.file)?.minGlibc;
    if (needs && host.libc === 'glibc' && host.glibcVersion && compareVersions(host.glibcVersion, needs) < 0) {
      out.push({ file, origin: 'prebuild', error: `needs glibc ${needs} or newer; this system has glibc ${host.glibcVersion}` });
    } else {
      out.push({ file, origin: 'prebuild' });
    }
  }
  for (const t of tags) {
    if (!matching.includes(t)) {
      out.push({ file: path.join(dir, t.file), origin: 'prebuild', error: `built for ${t.libc ?? 'another runtime'}, this system is ${host.libc || host.platform}` });
    }
  }
  return out;
}

/** Short reasons for the loader errors people meet, ahead of the system's own message. */
export function explainLoadError(message: string): string {
  const first = message.split('\n')[0] ?? message;
  const glibc = /GLIBC_([0-9.]+)' not found/.exec(message);
  if (glibc) return `needs glibc ${glibc[1]} or newer (${first})`;
  if (/GLIBCXX_|CXXABI_/.test(message)) return `needs a newer libstdc++ than this system has (${first})`;
  if (/wrong ELF class|invalid ELF header|ELF file's phentsize|file too short/.test(message)) {
    return `not a loadable binary for this platform/arch: corrupt or built for another one (${first})`;
  }
  if (/NODE_MODULE_VERSION/.test(message)) return `built for another Node version (${first})`;
  if (/undefined symbol/.test(message)) return `built against another Node or a broken build (${first})`;
  if (/cannot open shared object file|ENOENT|Cannot find module/.test(message)) return `missing file or library (${first})`;
  return first;
}

/** What a consumer can run; the same text the install script prints. */
export function fixes(root: string): string {
  const shipped: string[] = [];
  try {
    for (const dir of fs.readdirSync(path.join(root, 'prebuilds'))) {
      for (const m of readManifest(path.join(root, 'prebuilds', dir))) shipped.push(`${m.platform}-${m.arch} (${m.libc}${m.minGlibc ? ` ${m.minGlibc} or newer` : ''})`);
    }
  } catch {
    // no prebuilds directory
  }
  return [
    `Prebuilt binaries in this package: ${shipped.length ? shipped.join(', ') : 'none'}.`,
    'What to do:',
    '  - reinstall to fetch the package with its prebuilt binary: npm install kvcompact',
    '  - build the CPU addon from source in your project (needs Python 3, make and a C++17',
    '    compiler): npm rebuild kvcompact --foreground-scripts',
    '  - build with CUDA from source (needs the CUDA toolkit and CMake), outside node_modules so',
    '    that `npm ci` does not wipe it, and point kvcompact at it:',
    '      git clone https://github.com/kvcompact/kvcompact && cd kvcompact && npm ci && npm run build:native',
    '      export KVCOMPACT_NATIVE=$PWD/build/Release/kvcompact.node',
    '  - bundlers (webpack, esbuild, Vite, Next.js) must leave kvcompact external: it loads a .node',
    `    file from its own directory (${root}).`,
    '  - `npx kvcompact doctor` prints this report and what the loaded binary supports.',
  ].join('\n');
}

/** The load failure: the host, every file with its reason, and the fixes. */
export function loadFailureMessage(what: string, attempts: readonly Attempt[], root: string, host: Host = describeHost()): string {
  const lines = [`kvcompact could not load its native addon (${what}) on ${hostLine(host)}.`];
  if (attempts.length === 0) {
    lines.push(`  No binary found: no build/Release/kvcompact.node and no prebuilds/${host.platform}-${host.arch}/*.node in ${root}.`);
  } else {
    lines.push('Tried:');
    for (const a of attempts) lines.push(`  ${a.file} (${a.origin}): ${a.error ?? 'not tried'}`);
  }
  lines.push(fixes(root));
  return lines.join('\n');
}

/** The result of loading: the module and the file it came from, or every attempt and why it failed. */
export type LoadResult<T> = { ok: true; addon: T; file: string; attempts: Attempt[] } | { ok: false; attempts: Attempt[] };

/**
 * Tries `attempts` in order with `load` (require); the first that loads wins. Attempts whose
 * reason is already set (wrong libc, glibc too old) are skipped and kept in the report.
 */
export function loadFirst<T>(attempts: Attempt[], load: (file: string) => T): LoadResult<T> {
  const tried: Attempt[] = [];
  for (const a of attempts) {
    if (a.error) {
      tried.push(a);
      continue;
    }
    try {
      const addon = load(a.file);
      tried.push(a);
      return { ok: true, addon, file: a.file, attempts: tried.concat(attempts.slice(tried.length)) };
    } catch (error) {
      // dlopen's message starts with the file name, which the report already shows.
      const message = error instanceof Error ? error.message : String(error);
      tried.push({ ...a, error: explainLoadError(message.startsWith(`${a.file}: `) ? message.slice(a.file.length + 2) : message) });
    }
  }
  return { ok: false, attempts: tried };
}
