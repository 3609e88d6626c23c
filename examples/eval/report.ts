// Results of an evaluation: rows per method, a markdown table and an SVG picture
// (quality against bytes per token, one series per method family), written by hand.
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

// ---------------------------------------------------------------- SVG

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22', '#393b79', '#637939', '#843c39', '#7b4173', '#3182bd'];
const SHAPES = ['circle', 'square', 'triangle', 'diamond'] as const;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function marker(shape: (typeof SHAPES)[number], x: number, y: number, color: string, r = 4): string {
  const f = (v: number): string => v.toFixed(1);
  switch (shape) {
    case 'circle':
      return `<circle cx="${f(x)}" cy="${f(y)}" r="${r}" fill="${color}"/>`;
    case 'square':
      return `<rect x="${f(x - r)}" y="${f(y - r)}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
    case 'triangle':
      return `<path d="M${f(x)},${f(y - r - 1)} L${f(x + r + 1)},${f(y + r)} L${f(x - r - 1)},${f(y + r)} Z" fill="${color}"/>`;
    case 'diamond':
      return `<path d="M${f(x)},${f(y - r - 1)} L${f(x + r + 1)},${f(y)} L${f(x)},${f(y + r + 1)} L${f(x - r - 1)},${f(y)} Z" fill="${color}"/>`;
  }
}

function niceTicks(lo: number, hi: number, count = 5): number[] {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo && v <= hi) ticks.push(v);
    }
  }
  return ticks;
}

interface Panel {
  title: string;
  value: (r: ResultRow) => number;
  format: (v: number) => string;
}

/** Quality (NLL, top-1 agreement) against bytes per token, log-scaled x; one series per family. */
export function svgPlot(rows: readonly ResultRow[], title: string): string {
  const ok = rows.filter((r) => r.tokens > 0 && Number.isFinite(r.bytesPerToken) && r.bytesPerToken > 0);
  const families = [...new Set(ok.map((r) => r.family))];
  const panels: Panel[] = [
    { title: 'mean NLL (nats/token, lower is better)', value: (r) => r.nll, format: (v) => v.toFixed(2) },
    { title: 'top-1 agreement with the f32 cache (%)', value: (r) => 100 * r.agreement, format: (v) => `${v.toFixed(v >= 99.5 || v % 1 === 0 ? 0 : 1)}` },
  ];
  const W = 1100;
  const pw = 470;
  const ph = 330;
  const left = [70, 70 + pw + 80];
  const top = 60;
  const legendRows = Math.ceil(families.length / 3);
  const H = top + ph + 60 + legendRows * 20 + 20;
  const xs = ok.map((r) => r.bytesPerToken);
  const xlo = Math.max(1, Math.min(...xs) / 1.25);
  const xhi = Math.max(...xs) * 1.25;
  const lx = (v: number): number => (Math.log(v) - Math.log(xlo)) / (Math.log(xhi) - Math.log(xlo));

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  panels.forEach((panel, pi) => {
    const x0 = left[pi]!;
    const vals = ok.map(panel.value).filter(Number.isFinite);
    let ylo = Math.min(...vals);
    let yhi = Math.max(...vals);
    const pad = (yhi - ylo) * 0.06 || 0.05;
    ylo -= pad;
    yhi += pad;
    const X = (v: number): number => x0 + lx(v) * pw;
    const Y = (v: number): number => top + ph - ((v - ylo) / (yhi - ylo)) * ph;
    out.push(`<text x="${x0 + pw / 2}" y="${top - 10}" text-anchor="middle" font-size="13">${esc(panel.title)}</text>`);
    out.push(`<rect x="${x0}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
    for (const t of logTicks(xlo, xhi)) {
      const x = X(t);
      out.push(`<line x1="${x.toFixed(1)}" y1="${top}" x2="${x.toFixed(1)}" y2="${top + ph}" stroke="#e4e4e4"/>`);
      out.push(`<text x="${x.toFixed(1)}" y="${top + ph + 16}" text-anchor="middle">${t}</text>`);
    }
    for (const t of niceTicks(ylo, yhi)) {
      const y = Y(t);
      out.push(`<line x1="${x0}" y1="${y.toFixed(1)}" x2="${x0 + pw}" y2="${y.toFixed(1)}" stroke="#e4e4e4"/>`);
      out.push(`<text x="${x0 - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${panel.format(t)}</text>`);
    }
    out.push(`<text x="${x0 + pw / 2}" y="${top + ph + 36}" text-anchor="middle">KV bytes per context token (all layers; log scale)</text>`);
    families.forEach((fam, fi) => {
      const color = COLORS[fi % COLORS.length]!;
      const shape = SHAPES[Math.floor(fi / COLORS.length + fi) % SHAPES.length]!;
      const pts = ok.filter((r) => r.family === fam).sort((a, b) => a.bytesPerToken - b.bytesPerToken);
      const isLine = pts.some((r) => r.param !== undefined) && pts.length > 1;
      if (isLine) {
        const d = pts.map((r, i) => `${i ? 'L' : 'M'}${X(r.bytesPerToken).toFixed(1)},${Y(panel.value(r)).toFixed(1)}`).join(' ');
        out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.5"/>`);
      }
      for (const r of pts) {
        out.push(`<g><title>${esc(`${r.label}: ${Math.round(r.bytesPerToken)} B/token, ${panel.format(panel.value(r))}`)}</title>${marker(shape, X(r.bytesPerToken), Y(panel.value(r)), color)}</g>`);
      }
    });
  });
  const ly = top + ph + 62;
  families.forEach((fam, fi) => {
    const color = COLORS[fi % COLORS.length]!;
    const shape = SHAPES[Math.floor(fi / COLORS.length + fi) % SHAPES.length]!;
    const col = fi % 3;
    const row = Math.floor(fi / 3);
    const x = 80 + col * 340;
    const y = ly + row * 20;
    out.push(marker(shape, x, y - 4, color));
    out.push(`<text x="${x + 12}" y="${y}">${esc(fam)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
