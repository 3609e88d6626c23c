#!/usr/bin/env node
// The `kvcompact` command (package.json "bin"): `npx kvcompact doctor`.
'use strict';
const path = require('node:path');

const usage = `usage: kvcompact doctor [--quick]

  doctor    the package version, the native binary loaded and how it was built, SIMD level,
            threads, CUDA (compiled, available, why not, device), and a 1-second self-test
            of append + attention against a JavaScript reference. Exit code 0 when healthy.
  --quick   skip the self-test`;

const [command, ...rest] = process.argv.slice(2);
if (command === '--help' || command === '-h' || command === 'help') {
  console.log(usage);
} else if (command !== 'doctor' || rest.some((a) => a !== '--quick')) {
  console.error(usage);
  process.exitCode = 2;
} else {
  let doctor;
  try {
    ({ doctor } = require(path.join(__dirname, '..', 'dist', 'cjs', 'cli', 'doctor.js')));
  } catch (error) {
    console.error(`kvcompact: the compiled TypeScript is missing (${error.message.split('\n')[0]}); in a checkout run \`npm run build:ts\``);
    process.exit(1);
  }
  process.exitCode = doctor({ selfTestMs: rest.includes('--quick') ? 0 : 1000 });
}
