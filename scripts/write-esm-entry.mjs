// Writes dist/esm/index.mjs (+ .d.mts): an ES module facade over the CommonJS build, so
// `import { KVCache } from 'kvcompact'` and `require('kvcompact')` share one instance.
// The export names are read from the compiled text (tsc declares every one of them as
// `exports.NAME = ` or `Object.defineProperty(exports, "NAME"`) rather than by requiring
// it: requiring loads the native addon, which a TypeScript-only build may not have.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const text = readFileSync(join(root, 'dist/cjs/index.js'), 'utf8');
const found = new Set();
for (const m of text.matchAll(/\bexports\.([A-Za-z_$][\w$]*)\s*=/g)) found.add(m[1]);
for (const m of text.matchAll(/Object\.defineProperty\(exports,\s*"([A-Za-z_$][\w$]*)"/g)) found.add(m[1]);
const names = [...found].filter((n) => n !== '__esModule' && n !== 'default').sort();
if (!names.includes('KVCache') || !found.has('default')) throw new Error(`dist/cjs/index.js: unexpected exports ${[...found].join(', ')}`);
const esm = join(root, 'dist/esm');
mkdirSync(esm, { recursive: true });
writeFileSync(
  join(esm, 'index.mjs'),
  `import cjs from '../cjs/index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs.default;\n`,
);
writeFileSync(join(esm, 'index.d.mts'), `export * from '../cjs/index.js';\nexport { default } from '../cjs/index.js';\n`);
console.log(`dist/esm: ${names.join(', ')}, default`);
