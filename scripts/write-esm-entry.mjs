// Writes dist/esm/index.mjs (+ .d.mts): an ES module facade over the CommonJS build, so
// `import { KVCache } from 'kvcompact'` and `require('kvcompact')` share one instance.
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const names = Object.keys(require(join(root, 'dist/cjs/index.js'))).filter((n) => n !== '__esModule');
const esm = join(root, 'dist/esm');
mkdirSync(esm, { recursive: true });
writeFileSync(
  join(esm, 'index.mjs'),
  `import cjs from '../cjs/index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`,
);
writeFileSync(join(esm, 'index.d.mts'), `export * from '../cjs/index.js';\n`);
console.log(`dist/esm: ${names.join(', ')}`);
