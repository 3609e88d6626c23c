// Results of an evaluation: rows per method and a markdown table (the picture: chart.ts).
import type { Method, Score } from './runner';

export interface ResultRow {
  id: string;
  family: string;
  label: string;
  param?: number;
  /** KV bytes per context token: the rows' storage × the fraction of rows kept */
  bytesPerToken: number;
  /** fraction of rows kept (1 for storage formats) */
  kept: number;
  nll: number;
  perplexity: number;
  /** top-1 agreement with the f32 cache, 0..1 */
  agreement: number;
  tokens: number;
  stories: number;
  seconds: number;
  error?: string;
  /** precision 'fast' methods: NLL minus the exact NLL of the same cache, and top-1 agreement with it */
  vsExact?: { deltaNll: number; agreement: number };
}

export function resultRows(methods: readonly Method[], scores: ReadonlyMap<string, Score>): ResultRow[] {
  return methods.map((m) => {
    const s = scores.get(m.id);
    const tokens = s?.tokens ?? 0;
    const kept = tokens > 0 ? s!.keptSum / tokens : NaN;
    const nll = tokens > 0 ? s!.nllSum / tokens : NaN;
    const row: ResultRow = {
      id: m.id,
      family: m.family,
      label: m.label,
      bytesPerToken: m.rowBytesPerToken * kept,
      kept,
      nll,
      perplexity: Math.exp(nll),
      agreement: tokens > 0 ? s!.agree / tokens : NaN,
      tokens,
      stories: s?.stories ?? 0,
      seconds: (s?.ms ?? 0) / 1000,
    };
    if (m.param !== undefined) row.param = m.param;
    if (s?.exactNllSum !== undefined && tokens > 0) {
      row.vsExact = { deltaNll: (s.nllSum - s.exactNllSum) / tokens, agreement: (s.exactAgree ?? 0) / tokens };
    }
    if (s?.error) row.error = s.error;
    return row;
  });
}

const num = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : '–');

export function markdownTable(rows: readonly ResultRow[]): string {
  const ref = rows.find((r) => r.id === 'f32');
  const lines = [
    '| method | family | bytes/token | kept | NLL | PPL | ΔNLL vs f32 | top-1 agreement | time (s) |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    if (r.error && r.tokens === 0) {
      lines.push(`| ${r.label} | ${r.family} | – | – | – | – | – | error: ${r.error.replace(/\|/g, '\\|').slice(0, 120)} | – |`);
      continue;
    }
    const delta = ref ? r.nll - ref.nll : NaN;
    lines.push(
      `| ${r.label} | ${r.family} | ${num(r.bytesPerToken, 0)} | ${num(100 * r.kept, r.kept < 0.1 ? 1 : 0)}% | ${num(r.nll, 4)} | ` +
        `${num(r.perplexity, 3)} | ${r.id === 'f32' ? '–' : `${delta >= 0 ? '+' : ''}${num(delta, 4)}`} | ` +
        `${num(100 * r.agreement, 2)}% | ${num(r.seconds, 1)} |`,
    );
  }
  return lines.join('\n');
}

const pct = (s: string): number => Number(s.replace('%', '')) / 100;

/** The inverse of markdownTable: the rows of the results table between `<!-- eval-results:begin -->` and `<!-- eval-results:end -->`. */
export function rowsFromMarkdown(md: string): { rows: ResultRow[]; stories: number } {
  const a = md.indexOf('<!-- eval-results:begin -->');
  const b = md.indexOf('<!-- eval-results:end -->');
  if (a < 0 || b < a) throw new Error('no <!-- eval-results:begin --> … <!-- eval-results:end --> section');
  const section = md.slice(a, b);
  const rows: ResultRow[] = [];
  for (const line of section.split('\n')) {
    if (!line.startsWith('| ') || line.startsWith('| method') || line.startsWith('|---')) continue;
    const c = line.slice(2, -2).split(' | ').map((x) => x.trim());
    if (c.length !== 9 || c[2] === '–') continue;
    rows.push({
      id: c[0]!, label: c[0]!, family: c[1]!, bytesPerToken: Number(c[2]), kept: pct(c[3]!), nll: Number(c[4]), perplexity: Number(c[5]),
      agreement: pct(c[7]!), tokens: 1, stories: 0, seconds: Number(c[8]),
    });
  }
  if (rows.length === 0) throw new Error('the results section has no table rows');
  const stories = Number(/(\d+) stories/.exec(section)?.[1] ?? NaN);
  return { rows, stories };
}

