// Prints the addon's source files for binding.gyp (space separated): node scripts/sources.cjs core cpu binding cudaStub
const sources = require('../sources.json');
const groups = process.argv.slice(2);
process.stdout.write(groups.flatMap((g) => sources[g]).join(' '));
