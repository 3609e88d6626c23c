// The evaluation picture: every series of the committed results has its own look (colour,
// marker and dash together), the families fall into their three groups, and the picture
// regenerated from EVALUATION.md's table is a well-formed SVG naming every series.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qualitySpec, qualitySvg, seriesStyle } from '../../examples/eval/chart';
import { markdownTable, rowsFromMarkdown } from '../../examples/eval/report';

const md = readFileSync(path.resolve(__dirname, '../../EVALUATION.md'), 'utf8');
const { rows, stories } = rowsFromMarkdown(md);
const families = [...new Set(rows.map((r) => r.family))];

describe('evaluation chart', () => {
  it('reads the results table of EVALUATION.md back (the inverse of markdownTable)', () => {
    expect(stories).toBe(176);
    expect(rows.length).toBe(68);
    expect(families.length).toBe(17);
    const again = rowsFromMarkdown(`<!-- eval-results:begin -->\n${markdownTable(rows)}\n<!-- eval-results:end -->`).rows;
    expect(again.map((r) => [r.family, r.bytesPerToken, r.nll, r.agreement])).toEqual(rows.map((r) => [r.family, r.bytesPerToken, r.nll, r.agreement]));
  });

  it('gives each of the 17 series a distinct colour and a distinct (colour, marker) look, grouped by family', () => {
    const styles = families.map(seriesStyle);
    expect(new Set(styles.map((s) => s.color)).size).toBe(families.length);
    expect(new Set(styles.map((s) => `${s.color} ${s.shape} ${s.dash.join(',')}`)).size).toBe(families.length);
    // Within a group, markers tell the policies apart, or shade + dash tell the query sources apart.
    for (const group of ['storage', 'eviction'] as const) {
      const g = styles.filter((s) => s.group === group);
      expect(new Set(g.map((s) => s.shape)).size).toBe(g.length);
    }
    const am = styles.filter((s) => s.group === 'compaction');
    expect(new Set(am.map((s) => `${s.shape} ${s.dash.join(',')}`)).size).toBe(am.length);
    expect(styles.map((s) => s.group).filter((g) => g === 'storage').length).toBe(3);
    expect(styles.map((s) => s.group).filter((g) => g === 'eviction').length).toBe(7);
    expect(styles.map((s) => s.group).filter((g) => g === 'compaction').length).toBe(7);
    // The pairs the hand-drawn picture repeated are now apart.
    const look = (f: string) => JSON.stringify(seriesStyle(f));
    expect(look('storage')).not.toBe(look('AM highest-attention, self-study queries'));
    expect(look('storage, rotated keys')).not.toBe(look('AM omp, self-study queries'));
    // Families of other runs get their own group and look too (sparse decode on EVALUATION.md's sparse table).
    const sparse = seriesStyle('sparse decode (f16, key summaries)');
    expect(sparse.group).toBe('sparse');
    expect(styles.map((s) => `${s.color} ${s.shape}`)).not.toContain(`${sparse.color} ${sparse.shape}`);
  });

  it('renders an SVG with both panels, three legends and every series', async () => {
    const spec = qualitySpec(rows, 'test title') as { hconcat: unknown[] };
    expect(spec.hconcat.length).toBe(2);
    const svg = await qualitySvg(rows, 'test title');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).not.toContain('NaN');
    for (const title of ['storage formats', 'eviction', 'Attention Matching', 'test title']) expect(svg).toContain(title);
    for (const f of families) expect(svg).toContain(seriesStyle(f).label);
  });
});
