// Prints the quality table of docs/quantization-results.md (markdown), and with --bounds the
// bounds table of quality-bounds.ts (1.3 × measured, two significant digits, rounded up):
//   npx tsx test/quantization/print-quality-table.ts [--bounds]
import { configName, gaussianDataset, measure, qualityConfigs, storiesDataset, syntheticDataset } from './quality-cases';

const datasets = [gaussianDataset(), syntheticDataset(), storiesDataset()];
if (process.argv.includes('--bounds')) {
  console.log('export const QUALITY_BOUNDS: Readonly<Record<string, number>> = {');
  for (const d of datasets) {
    for (const c of qualityConfigs(d)) {
      const e = measure(d, c) * 1.3;
      const p = 10 ** (Math.floor(Math.log10(e)) - 1);
      console.log(`  '${d.name}: ${configName(c)}': ${(Math.ceil(e / p) * p).toPrecision(2)},`);
    }
  }
  console.log('};');
} else {
  for (const d of datasets) {
    console.log(`\n**${d.name}** (head_dim ${d.headDim}, ${d.kvHeads} kv heads, ${d.queryHeads} query heads)\n`);
    console.log('| keys | values | group | rotation | rel. error |');
    console.log('|---|---|---|---|---|');
    for (const c of qualityConfigs(d)) {
      console.log(`| ${c.keys} | ${c.values} | ${c.groupSize} | ${c.rotate ? 'keys' : '-'} | ${measure(d, c).toExponential(2)} |`);
    }
  }
}
