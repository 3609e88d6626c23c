// Plain-text output of the demo: byte counts, aligned tables and text in columns.

export function formatBytes(n: number): string {
  const a = Math.abs(n);
  if (a < 1024) return `${Math.round(n)} B`;
  if (a < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (a < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A table with the first column left-aligned and the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Words of `text` in lines of at most `width` characters (paragraphs kept). */
export function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  for (const para of text.split('\n')) {
    let line = '';
    for (const word of para.split(' ')) {
      if (line.length > 0 && line.length + 1 + word.length > width) {
        out.push(line);
        line = word;
      } else {
        line = line.length > 0 ? `${line} ${word}` : word;
      }
      while (line.length > width) {
        out.push(line.slice(0, width));
        line = line.slice(width);
      }
    }
    out.push(line);
  }
  return out;
}

/** Texts side by side under their titles, as wide as the terminal allows (stacked when too narrow). */
export function columns(items: { title: string; text: string }[], total = process.stdout.columns ?? 120): string {
  const n = items.length;
  const w = Math.floor((Math.min(200, Math.max(60, total)) - 3 * (n - 1)) / n);
  if (w < 24) return items.map((it) => [it.title, '-'.repeat(it.title.length), it.text].join('\n')).join('\n\n');
  const cols = items.map((it) => [...wrap(it.title, w), '-'.repeat(Math.min(w, it.title.length)), ...wrap(it.text, w)]);
  const height = Math.max(...cols.map((c) => c.length));
  const lines: string[] = [];
  for (let i = 0; i < height; i++) lines.push(cols.map((c) => (c[i] ?? '').padEnd(w)).join(' │ ').trimEnd());
  return lines.join('\n');
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
