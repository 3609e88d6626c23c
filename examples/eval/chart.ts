// The evaluation picture: quality (mean NLL, top-1 agreement with the f32 cache) against KV
// bytes per token, one series per method family, drawn by Vega-Lite and rendered to SVG by
// Vega in Node (no browser, no canvas). Families are grouped into three legends (storage
// formats, eviction policies, Attention Matching) and every series has its own colour and
// marker: the hue says the group, the marker the policy or method, and for Attention
// Matching the shade and line dash say where the reference queries came from.
import type { ResultRow } from './report';

interface SeriesStyle {
  group: 'storage' | 'eviction' | 'compaction' | 'sparse';
  label: string;
  color: string;
  shape: string;
  dash: number[];
}

const STAR = 'M0,-1L0.24,-0.33L0.95,-0.31L0.38,0.12L0.59,0.81L0,0.4L-0.59,0.81L-0.38,0.12L-0.95,-0.31L-0.24,-0.33Z';
const GROUPS = {
  storage: 'storage formats (all rows kept)',
  eviction: 'eviction (keep 50, 25, 10%)',
  compaction: 'Attention Matching',
  sparse: 'sparse decode (a fraction of rows read)',
} as const;

const STORAGE: Record<string, [string, string, string]> = {
  storage: ['plain', '#252525', 'circle'],
  'storage, rotated keys': ['rotated keys', '#737373', 'square'],
  'storage, rotated keys + values': ['rotated keys + values', '#a6a6a6', 'diamond'],
};
const EVICTION: Record<string, [string, string]> = {
  slidingWindow: ['#e31a1c', 'triangle-up'],
  streamingLLM: ['#ff7f00', 'triangle-down'],
  h2o: ['#b15928', 'triangle-left'],
  snapKV: ['#e7298a', 'triangle-right'],
  tova: ['#d4a017', 'cross'],
  keyNorm: ['#fb9a99', 'diamond'],
  random: ['#8c2d04', STAR],
};
// Attention Matching: method → marker and hue, query source → shade and dash.
const AM_METHOD: Record<string, { shape: string; shades: Record<string, string> }> = {
  'highest-attention': { shape: 'circle', shades: { prefill: '#9ecae1', 'repeat-prefill': '#4292c6', 'self-study': '#08306b' } },
  omp: { shape: 'square', shades: { prefill: '#a1d99b', 'repeat-prefill': '#41ab5d', 'self-study': '#00441b' } },
};
const SOURCE_DASH: Record<string, number[]> = { prefill: [2, 3], 'repeat-prefill': [6, 3], 'self-study': [] };

/** The look of one family (a series); families it does not know get a fallback look in their group. */
export function seriesStyle(family: string): SeriesStyle {
  const s = STORAGE[family];
  if (s) return { group: 'storage', label: s[0], color: s[1], shape: s[2], dash: [] };
  const ev = /^evict (\w+)$/.exec(family);
  if (ev) {
    const [color, shape] = EVICTION[ev[1]!] ?? ['#fdbf6f', 'wedge'];
    return { group: 'eviction', label: ev[1]!, color, shape, dash: [] };
  }
  const am = /^AM ([\w-]+), ([\w-]+) queries$/.exec(family);
  if (am && AM_METHOD[am[1]!]) {
    const m = AM_METHOD[am[1]!]!;
    return {
      group: 'compaction',
      label: `${am[1] === 'omp' ? 'OMP' : am[1]}, ${am[2]}`,
      color: m.shades[am[2]!] ?? '#6baed6',
      shape: m.shape,
      dash: SOURCE_DASH[am[2]!] ?? [],
    };
  }
  if (family.startsWith('AM online')) return { group: 'compaction', label: 'online, row budget', color: '#6a3d9a', shape: 'diamond', dash: [1, 2] };
  if (family.startsWith('sparse')) return { group: 'sparse', label: family.replace(/^sparse decode ?/, '') || family, color: '#17becf', shape: 'diamond', dash: [4, 2] };
  if (family.startsWith('storage')) return { group: 'storage', label: family, color: '#525252', shape: 'triangle-up', dash: [] };
  return { group: 'compaction', label: family, color: '#bcbd22', shape: 'wedge', dash: [] };
}

type Spec = Record<string, unknown>;

/** The Vega-Lite spec of the picture (two panels side by side, three grouped legends). */
export function qualitySpec(rows: readonly ResultRow[], title: string): Spec {
  const ok = rows.filter((r) => r.tokens > 0 && Number.isFinite(r.bytesPerToken) && r.bytesPerToken > 0);
  const data = ok.map((r) => {
    const st = seriesStyle(r.family);
    return { ...st, method: r.label, family: r.family, bytes: r.bytesPerToken, nll: r.nll, agreement: 100 * r.agreement, kept: r.kept };
  });
  // Legend order: storage, eviction, compaction; within Attention Matching by method, then source.
  const rank = (f: string): number => {
    const st = seriesStyle(f);
    const g = { storage: 0, eviction: 1, compaction: 2, sparse: 3 }[st.group] * 1000;
    const m = /^AM ([\w-]+), ([\w-]+) queries$/.exec(f);
    return g + (m ? Object.keys(AM_METHOD).indexOf(m[1]!) * 10 + Object.keys(SOURCE_DASH).indexOf(m[2]!) : f.startsWith('AM online') ? 100 : 0);
  };
  const order = [...new Set(data.map((d) => d.family))];
  const families = [...order].sort((a, b) => rank(a) - rank(b) || order.indexOf(a) - order.indexOf(b));
  // A series is a line when it sweeps a budget (several rows of one family with different sizes).
  const lineFamilies = new Set(families.filter((f) => f !== 'storage' && !f.startsWith('storage') && data.filter((d) => d.family === f).length > 1));

  const panel = (field: 'nll' | 'agreement', axisTitle: string, withLegend: boolean): Spec => ({
    width: 430,
    height: 390,
    layer: (['storage', 'eviction', 'compaction', 'sparse'] as const).flatMap((group) => {
      const members = families.filter((f) => seriesStyle(f).group === group);
      if (members.length === 0) return [];
      const labels = members.map((f) => seriesStyle(f).label);
      const scale = (key: 'color' | 'shape' | 'dash'): Spec => ({
        domain: labels,
        range: members.map((f) => {
          const s = seriesStyle(f);
          return key === 'color' ? s.color : key === 'shape' ? s.shape : s.dash;
        }),
      });
      const rowsOf = { filter: { field: 'group', equal: group } };
      const x = { field: 'bytes', type: 'quantitative', scale: { type: 'log', nice: false, padding: 12 }, axis: { title: 'KV bytes per context token (all layers, log scale)', grid: true } };
      const y = { field, type: 'quantitative', scale: { zero: false, padding: 10 }, axis: { title: axisTitle } };
      const legend = withLegend ? { title: GROUPS[group], orient: 'right', symbolStrokeWidth: 1.5, labelLimit: 260, titleLimit: 300 } : null;
      const layers: Spec[] = [];
      if (members.some((f) => lineFamilies.has(f))) {
        layers.push({
          transform: [rowsOf, { filter: { field: 'family', oneOf: members.filter((f) => lineFamilies.has(f)) } }],
          mark: { type: 'line', strokeWidth: 1.6, opacity: 0.9 },
          encoding: {
            x, y, order: { field: 'bytes', type: 'quantitative' },
            detail: { field: 'label' },
            color: { field: 'label', type: 'nominal', scale: scale('color'), ...(withLegend ? {} : { legend: null }) },
            strokeDash: { field: 'label', type: 'nominal', scale: scale('dash'), legend: null },
          },
        });
      }
      layers.push({
        transform: [rowsOf],
        mark: { type: 'point', filled: true, size: 60, opacity: 0.95, stroke: 'white', strokeWidth: 0.6 },
        encoding: {
          x, y,
          color: { field: 'label', type: 'nominal', scale: scale('color'), legend },
          shape: { field: 'label', type: 'nominal', scale: scale('shape'), legend },
          tooltip: [{ field: 'method' }, { field: 'bytes', format: '.0f' }, { field, format: '.4f' }],
        },
      });
      if (group === 'storage') {
        // The storage points far from the f32 cache get their names (the others overlap it).
        layers.push({
          transform: [rowsOf, { filter: 'datum.agreement < 95' }],
          mark: { type: 'text', align: 'left', dx: 7, fontSize: 10, color: '#444' },
          encoding: { x, y, text: { field: 'method' } },
        });
      }
      return [{ layer: layers, resolve: { scale: { color: 'shared', shape: 'shared', strokeDash: 'shared' } } }];
    }),
    resolve: { scale: { color: 'independent', shape: 'independent', strokeDash: 'independent' } },
  });

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 15 },
    background: 'white',
    padding: 10,
    data: { values: data },
    hconcat: [
      panel('agreement', 'top-1 agreement with the f32 cache (%, higher is better)', false),
      panel('nll', 'mean NLL of the second half (nats/token, lower is better)', true),
    ],
    resolve: { scale: { color: 'independent', shape: 'independent', strokeDash: 'independent' } },
    config: { font: 'Helvetica, Arial, sans-serif', legend: { labelLimit: 320, titleLimit: 320, titleFontSize: 12, labelFontSize: 11, symbolSize: 70, rowPadding: 3 }, axis: { titleFontWeight: 'normal' } },
  };
}

/** Renders the picture to SVG text (Vega-Lite compiled to Vega, rendered headless). */
export async function qualitySvg(rows: readonly ResultRow[], title: string): Promise<string> {
  const vegaLite = await import('vega-lite');
  const vega = await import('vega');
  // Layers that share a legend report it as a merge conflict; only errors are worth showing.
  const compiled = vegaLite.compile(qualitySpec(rows, title) as never, { logger: vega.logger(vega.Error) }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return `${svg}\n`;
}
