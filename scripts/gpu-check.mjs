// `npm run gpu-check`: on a machine with an NVIDIA GPU, builds the CUDA addon (cmake-js,
// KVC_CUDA=ON), runs every CUDA parity test on the hardware (the vitest files that call
// cudaTarget(), with KVCOMPACT_CUDA_TARGET=device so that none falls back to the emulator),
// then runs scripts/gpu-check-bench.ts (decode attention against the device's copy bandwidth,
// compaction of a Llama-3-8B-shaped sequence) and prints one JSON document with every figure.
// Progress goes to stderr, the JSON alone to stdout. Without a GPU it prints one line and
// exits 0. `--cpu-smoke` runs only the benchmark code on device 'cpu' at toy sizes, to test
// this script where there is no GPU (its numbers mean nothing).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);
const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const started = Date.now();
const seconds = (since) => (Date.now() - since) / 1e3;
// Budgets per phase, so that the whole check stays under 5 minutes or says which phase ran over.
const BUDGET_S = { build: 150, tests: 50, bench: 100 }; // 300 s in all

function run(label, command, args, options = {}) {
  process.stderr.write(`gpu-check: ${label}: ${[command, ...args].join(' ')}\n`);
  const t0 = Date.now();
  const result = spawnSync(command, args, {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    stdio: ['ignore', options.captureStdout ? 'pipe' : process.stderr, process.stderr],
    timeout: (options.budget ?? 600) * 1000,
    env: { ...process.env, ...(options.env ?? {}) },
  });
  return {
    ok: result.status === 0,
    status: result.status,
    timedOut: result.error?.code === 'ETIMEDOUT',
    error: result.error ? String(result.error.message) : undefined,
    stdout: result.stdout ?? '',
    seconds: seconds(t0),
  };
}

// nvidia-smi when it is there; otherwise the driver's device node.
function detectGpu() {
  const smi = spawnSync('nvidia-smi', ['--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'], { encoding: 'utf8' });
  if (smi.status === 0 && smi.stdout.trim()) return { found: true, nvidiaSmi: smi.stdout.trim().split('\n') };
  if (existsSync('/dev/nvidia0')) return { found: true, nvidiaSmi: null, deviceNode: '/dev/nvidia0' };
  const why = smi.error ? 'nvidia-smi not found' : `nvidia-smi exited ${smi.status}`;
  return { found: false, why: `${why}, no /dev/nvidia0` };
}

// Test files that run device 'cuda' through test/support/cuda-target.ts (the emulator-only
// file calls cudaTarget('emulator') and is not a hardware test).
function cudaTestFiles() {
  const files = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir)) {
      const full = join(dir, entry);
      if (statSync(full).isDirectory()) walk(full);
      else if (entry.endsWith('.test.ts') && readFileSync(full, 'utf8').includes('cudaTarget()')) files.push(relative(root, full));
    }
  };
  walk(join(root, 'test'));
  return files.sort();
}

function bench(args, budget) {
  const r = run('benchmarks', process.execPath, [tsx, 'scripts/gpu-check-bench.ts', ...args],
    { captureStdout: true, budget });
  if (!r.ok) return { error: r.timedOut ? `over its ${budget} s budget` : `exited ${r.status}`, seconds: r.seconds };
  return { ...JSON.parse(r.stdout.trim().split('\n').at(-1)), seconds: r.seconds };
}

function main() {
  if (process.argv.includes('--cpu-smoke')) {
    const result = bench(['--device', 'cpu', '--small'], BUDGET_S.bench);
    process.stdout.write(`${JSON.stringify({ smoke: true, note: 'device cpu at toy sizes: tests this script only', ...result, totalSeconds: seconds(started) }, null, 2)}\n`);
    return result.error ? 1 : 0;
  }

  const gpu = detectGpu();
  if (!gpu.found) {
    console.log(`gpu-check: no NVIDIA GPU on this machine (${gpu.why}); nothing built or measured`);
    return 0;
  }
  const report = { gpu, build: null, devices: null, tests: null, benchmarks: null, totalSeconds: 0 };
  const finish = (code) => {
    report.totalSeconds = seconds(started);
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return code;
  };

  const build = run('build', bin('cmake-js'), ['build', '--CDKVC_CUDA=ON'], { budget: BUDGET_S.build });
  report.build = { ok: build.ok, seconds: build.seconds, ...(build.ok ? {} : { error: build.error ?? `exited ${build.status}` }) };
  if (!build.ok) return finish(1);

  const devices = run('devices', process.execPath, [tsx, 'scripts/gpu-check-bench.ts', '--devices'], { captureStdout: true, budget: 60 });
  report.devices = devices.ok ? JSON.parse(devices.stdout.trim().split('\n').at(-1)) : { error: `exited ${devices.status}` };
  if (!report.devices?.cuda?.available) {
    report.error = `the GPU is there but device 'cuda' is not: ${report.devices?.cuda?.reason ?? report.devices?.error}`;
    return finish(1);
  }

  const files = cudaTestFiles();
  const results = join(tmpdir(), `kvcompact-gpu-check-${process.pid}.json`);
  const tests = run('parity tests on the GPU', process.execPath,
    [join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${results}`, ...files],
    { env: { KVCOMPACT_CUDA_TARGET: 'device' }, budget: BUDGET_S.tests });
  let passed = 0, failed = 0;
  if (existsSync(results)) {
    const json = JSON.parse(readFileSync(results, 'utf8'));
    passed = json.numPassedTests ?? 0;
    failed = (json.numFailedTests ?? 0) + (json.testResults ?? []).filter((f) => f.status === 'failed' && !(f.assertionResults ?? []).length).length;
    rmSync(results, { force: true });
  }
  if (!tests.ok && failed === 0) failed = 1;
  report.tests = { files, passed, failed, seconds: tests.seconds, ...(tests.timedOut ? { error: `over its ${BUDGET_S.tests} s budget` } : {}) };

  report.benchmarks = bench([], BUDGET_S.bench);
  return finish(failed === 0 && tests.ok && !report.benchmarks.error ? 0 : 1);
}

process.exit(main());
