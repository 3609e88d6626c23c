// `npx kvcompact doctor`: what this installation is (package version, the host, which .node
// loaded and how it was built, SIMD level, threads, CUDA) and whether it computes correctly
// here (a self-test against a JavaScript reference). The report is what a bug report needs.
import * as path from 'node:path';

import { loadNativeWithFile, requestedBuild } from '../native/binding';
import { describeHost, hostLine, packageRoot, productionCandidates, readManifest } from '../native/locate';
import { version } from '../version';
import { selfTest } from './self-test';

export interface DoctorOptions {
  /** Self-test time per device in milliseconds (default 1000; 0 skips it). */
  selfTestMs?: number;
  /** Where the report goes (default console.log). */
  print?: (line: string) => void;
}

/** Prints the report; returns the process exit code (0 healthy, 1 not). */
export function doctor(options: DoctorOptions = {}): number {
  const print = options.print ?? ((line: string) => console.log(line));
  const budget = options.selfTestMs ?? 1000;
  const root = packageRoot();
  const host = describeHost();
  print(`kvcompact ${version}`);
  print(`  package:   ${root}`);
  print(`  host:      ${hostLine(host)}`);

  const build = requestedBuild();
  let loaded;
  try {
    loaded = loadNativeWithFile(build);
  } catch (error) {
    print('');
    print((error as Error).message);
    return 1;
  }
  const { addon, file } = loaded;
  const origin =
    typeof build !== 'string' || build === 'test' ? 'KVCOMPACT_NATIVE' : file.includes(`${path.sep}prebuilds${path.sep}`) ? 'prebuilt' : 'built from source';
  print(`  binary:    ${file} (${origin})`);
  if (build === 'production') {
    for (const a of productionCandidates(root, host)) {
      if (a.file !== file && a.error) print(`             skipped ${a.file}: ${a.error}`);
    }
  }
  const manifest = readManifest(path.dirname(file)).find((m) => m.file === path.basename(file));
  if (manifest) print(`             needs glibc >= ${manifest.minGlibc}; ${(manifest.bytes / 1e6).toFixed(1)} MB; sha256 ${manifest.sha256.slice(0, 16)}…`);
  const info = addon.buildInfo();
  print(
    `  build:     ${info.buildSystem}, ${info.compiler}, N-API ${info.napiVersion}, ` +
      `${info.staticCxxRuntime ? 'C++ runtime linked in' : 'shared C++ runtime'}, assertions ${info.assertions ? 'on' : 'off'}` +
      (info.cudaEmulationCompiled ? ', CUDA emulator (test build)' : ''),
  );
  const devices = addon.devices();
  print(`  cpu:       SIMD ${devices.cpu.simd}, ${devices.cpu.threads} hardware threads`);
  const cuda = devices.cuda;
  const compiled = cuda.compiled ? `compiled (${info.cudaArchitectures || 'architectures not recorded'})` : 'not compiled (CPU-only build)';
  const state = cuda.available
    ? `available: ${cuda.name ?? 'device'}${cuda.computeCapability ? `, compute ${cuda.computeCapability}` : ''}` +
      `${cuda.totalMemory ? `, ${(cuda.totalMemory / 2 ** 30).toFixed(1)} GiB` : ''}${cuda.devices && cuda.devices > 1 ? `, ${cuda.devices} devices` : ''}`
    : `unavailable: ${cuda.reason ?? 'unknown reason'}`;
  print(`  cuda:      ${compiled}; ${state}${cuda.driverVersion ? `; driver ${cuda.driverVersion}` : ''}${cuda.runtimeVersion ? `, runtime ${cuda.runtimeVersion}` : ''}`);

  if (budget <= 0) return 0;
  let healthy = true;
  const targets = cuda.available ? (['cpu', 'cuda'] as const) : (['cpu'] as const);
  for (const device of targets) {
    const r = selfTest(device, budget);
    const ok = r.failures.length === 0;
    healthy &&= ok;
    print(`  self-test: ${device}: ${ok ? 'passed' : 'FAILED'}, ${r.checks} checks (append + attention vs a JavaScript reference, 5 formats) in ${Math.round(r.milliseconds)} ms`);
    for (const f of r.failures.slice(0, 5)) print(`             ${f}`);
  }
  return healthy ? 0 : 1;
}
