// `npm run eval:chart`: redraws docs/evaluation-quality.svg from the evaluation results, by
// default the table of the latest run in EVALUATION.md (between its eval-results markers), or
// from a results.json that `npm run eval` wrote (--from FILE.json).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseCli, runMain, UsageError, usage } from '../shared/cli';
import { qualitySvg } from './chart';
import { rowsFromMarkdown, type ResultRow } from './report';

const ROOT = path.resolve(__dirname, '../..');

export const CHART_SPEC = {
  command: 'npm run eval:chart --',
  summary: 'Redraws the evaluation picture (Vega-Lite, rendered to SVG in Node) from saved evaluation results.',
  options: {
    from: { type: 'string', value: 'FILE', description: 'EVALUATION.md (default: its latest results table) or a results.json of npm run eval' },
    out: { type: 'string', value: 'FILE', description: 'the SVG to write (default docs/evaluation-quality.svg)' },
    title: { type: 'string', value: 'TEXT', description: 'the title (default: from the results)' },
  },
} as const;

runMain(async () => {
  const o = parseCli(CHART_SPEC, process.argv.slice(2));
  if (o.help) {
    process.stdout.write(usage(CHART_SPEC));
    return;
  }
  const from = path.resolve(o.from ?? path.join(ROOT, 'EVALUATION.md'));
  let rows: ResultRow[];
  let stories: number;
  let model: string | undefined;
  try {
    if (from.endsWith('.json')) {
      const saved = JSON.parse(readFileSync(from, 'utf8')) as { rows: ResultRow[]; stories: number; model?: string };
      rows = saved.rows;
      stories = saved.stories;
      model = saved.model;
    } else {
      ({ rows, stories } = rowsFromMarkdown(readFileSync(from, 'utf8')));
    }
  } catch (err) {
    throw new UsageError(`cannot read results from ${from}: ${(err as Error).message}`);
  }
  const title =
    o.title ??
    (model === undefined || model === 'stories260K'
      ? `stories260K, ${stories} TinyStories: quality of the second half vs KV bytes per token`
      : `${model}, ${stories} passages: quality of the second half vs KV bytes per token`);
  const out = path.resolve(o.out ?? path.join(ROOT, 'docs/evaluation-quality.svg'));
  writeFileSync(out, await qualitySvg(rows, title));
  console.error(`wrote ${path.relative(process.cwd(), out)} (${rows.length} methods, ${new Set(rows.map((r) => r.family)).size} series)`);
});
