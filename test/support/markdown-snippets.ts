// Fenced code blocks of a markdown document, with the line each starts on, so that a test can
// run the examples of a guide and point at the block that failed. A block whose info string
// carries `file=NAME` is a file for the other blocks to import, not a program of its own.

export interface Snippet {
  /** the info string's first word: ts, js, sh, ... */
  lang: string;
  /** `file=NAME` in the info string */
  file?: string;
  code: string;
  /** 1-based line of the opening fence */
  line: number;
}

export function extractSnippets(markdown: string): Snippet[] {
  const lines = markdown.split('\n');
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    if (i >= lines.length) throw new Error(`unclosed code block at line ${start + 1}`);
    const file = /(?:^|\s)file=(\S+)/.exec(open[2]!)?.[1];
    out.push({ lang: open[1]!, ...(file ? { file } : {}), code: `${body.join('\n')}\n`, line: start + 1 });
  }
  return out;
}
