// Quantization quality: relative attention-output error of int8 / int4 caches (group sizes
// 32 / 64 / 128, or 8 at head_dim 8; keys rotated or not) against a float64 reference on the
// unquantized rows, on Gaussian rows, synthetic LLM-like streams and real stories260K
// keys / values / queries (quality-cases.ts). Each bound is 1.3 × its measured value
// (quality-bounds.ts), so a loss of accuracy fails; the table is in docs/quantization-results.md.
import { describe, expect, it } from 'vitest';
import { QUALITY_BOUNDS } from './quality-bounds';
import { type Dataset, configName, gaussianDataset, measure, qualityConfigs, storiesDataset, syntheticDataset } from './quality-cases';

const datasets: Record<string, () => Dataset> = { gaussian: gaussianDataset, synthetic: syntheticDataset, stories: storiesDataset };

for (const [name, make] of Object.entries(datasets)) {
  describe(`quantization quality on ${name} data`, () => {
    const d = make();
    for (const c of qualityConfigs(d)) {
      const key = `${name}: ${configName(c)}`;
      it(configName(c), () => {
        const bound = QUALITY_BOUNDS[key];
        expect(bound, `a bound for ${key}`).toBeDefined();
        const e = measure(d, c);
        expect(e, `${key}: relative error`).toBeLessThanOrEqual(bound!);
        // The bounds are measured values, not loose guesses: well above them means a real
        // regression, well below means the bound (or the data) should be renewed.
        expect(e, `${key}: far below its bound ${bound}; regenerate quality-bounds.ts`).toBeGreaterThan(bound! / 3);
      });
    }
  });
}

describe('Hadamard rotation on outlier key channels', () => {
  const d = syntheticDataset();
  for (const groupSize of [32, 64, 128]) {
    it(`reduces the int4 key error (group ${groupSize}) by at least 10%`, () => {
      const plain = measure(d, { keys: 'int4', values: 'f32', groupSize, rotate: false });
      const rotated = measure(d, { keys: 'int4', values: 'f32', groupSize, rotate: true });
      expect(rotated, `int4 keys G${groupSize}: rotated ${rotated} vs plain ${plain}`).toBeLessThan(0.9 * plain);
    });
  }
  it('does not help Gaussian keys, which have no outliers to spread (within 5%)', () => {
    const g = gaussianDataset();
    const plain = measure(g, { keys: 'int4', values: 'f32', groupSize: 32, rotate: false });
    const rotated = measure(g, { keys: 'int4', values: 'f32', groupSize: 32, rotate: true });
    expect(Math.abs(rotated - plain) / plain).toBeLessThan(0.05);
  });
});
