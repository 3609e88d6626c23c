#!/usr/bin/env node
// The package's install script. It uses a binary that loads (the prebuilt one in prebuilds/,
// or an earlier build from source); when none does, it says why each was rejected and builds
// the CPU-only addon from source with node-gyp, and if that fails too it says what to do,
// after node-gyp's own output. `npm install --build-from-source` (or
// npm_config_build_from_source=true) skips the prebuilt binary.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const locatePath = path.join(root, 'dist', 'cjs', 'native', 'locate.js');
const tag = 'kvcompact:';

function onPath(name) {
  return (process.env.PATH || '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, name)));
}

// What a from-source build needs, by name, so that the summary can say what is missing.
function missingTools() {
  const missing = [];
  if (!['c++', 'g++', 'clang++'].some(onPath)) missing.push('a C++17 compiler (g++ or clang++)');
  if (!onPath('make')) missing.push('make');
  if (!['python3', 'python'].some(onPath)) missing.push('Python 3');
  return missing;
}

function nodeGypCommand() {
  // npm tells scripts where its bundled node-gyp is; otherwise a local one, then PATH.
  const bundled = process.env.npm_config_node_gyp;
  if (bundled && fs.existsSync(bundled)) return [process.execPath, [bundled, 'rebuild']];
  try {
    return [process.execPath, [require.resolve('node-gyp/bin/node-gyp.js'), 'rebuild']];
  } catch {
    return ['node-gyp', ['rebuild']];
  }
}

function buildFromSource() {
  const [cmd, args] = nodeGypCommand();
  const run = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: cmd === 'node-gyp' });
  return run.status === 0;
}

function main() {
  const fromSource = process.env.npm_config_build_from_source === 'true';
  if (!fs.existsSync(locatePath)) {
    // A checkout of the repository before its TypeScript is compiled: build as node-gyp-build would.
    if (!fromSource) {
      try {
        require('node-gyp-build')(root);
        return 0;
      } catch {
        // nothing loadable yet
      }
    }
    return buildFromSource() ? 0 : 1;
  }
  const locate = require(locatePath);
  const host = locate.describeHost();
  let attempts = [];
  if (!fromSource) {
    const result = locate.loadFirst(locate.productionCandidates(root, host), (file) => require(file));
    if (result.ok) return 0;
    attempts = result.attempts;
    console.error(
      `${tag} no prebuilt binary loads on ${locate.hostLine(host)}:\n` +
        (attempts.length ? attempts.map((a) => `  ${a.file}: ${a.error}`).join('\n') : `  none for ${host.platform}-${host.arch} in ${root}/prebuilds`),
    );
  }
  const missing = missingTools();
  const rejected = fromSource ? 'a build from source was requested (build_from_source)' : 'no prebuilt binary loads (see above)';
  if (missing.length) {
    // node-gyp would fail with a page of errors that hide the reason; say it instead.
    console.error(`\n${tag} installation failed: ${rejected}, and building from source needs ${missing.join(', ')} on PATH.\n${locate.fixes(root)}`);
    return 1;
  }
  console.error(`${tag} building the CPU-only addon from source with node-gyp.`);
  if (buildFromSource()) {
    console.error(`${tag} built build/Release/kvcompact.node from source (CPU only).`);
    return 0;
  }
  console.error(`\n${tag} installation failed: ${rejected}, and the build from source failed (compiler output above).\n${locate.fixes(root)}`);
  return 1;
}

process.exitCode = main();
