// A one-line progress display on stderr, without dependencies. On a terminal the line is
// redrawn in place (at most ~10 times a second); otherwise a line is printed now and then,
// so logs of CI runs stay short.

export class Progress {
  private last = 0;
  private shown = false;
  private readonly tty: boolean;

  constructor(
    private readonly enabled = true,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = stream.isTTY === true;
  }

  /** Show `text` (throttled unless `force`). */
  update(text: string, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.last < (this.tty ? 100 : 5000)) return;
    this.last = now;
    if (this.tty) {
      const width = Math.max(20, (this.stream.columns ?? 100) - 1);
      this.stream.write(`\r\x1b[K${text.length > width ? text.slice(0, width - 1) + '…' : text}`);
      this.shown = true;
    } else {
      this.stream.write(`${text}\n`);
    }
  }

  /** Erase the line (on a terminal) so that normal output follows cleanly. */
  done(text?: string): void {
    if (!this.enabled) return;
    if (this.tty && this.shown) this.stream.write('\r\x1b[K');
    this.shown = false;
    if (text !== undefined) this.stream.write(`${text}\n`);
  }
}

/** "1m23s" / "4.2s" */
export function formatSeconds(ms: number): string {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
}

/** Seeded random numbers: uniform (xorshift128+ style, 32-bit) and Gaussian (Box-Muller). */
export class Rng {
  private s0: number;
  private s1: number;
  private spare: number | undefined;

  constructor(seed = 1) {
    this.s0 = (seed ^ 0x9e3779b9) >>> 0 || 1;
    this.s1 = (Math.imul(seed, 0x85ebca6b) ^ 0xc2b2ae35) >>> 0 || 2;
    for (let i = 0; i < 8; i++) this.uint32();
  }

  uint32(): number {
    let x = this.s0;
    const y = this.s1;
    this.s0 = y;
    x ^= x << 23;
    x ^= x >>> 17;
    x ^= y ^ (y >>> 26);
    this.s1 = x >>> 0;
    return (this.s0 + this.s1) >>> 0;
  }

  /** uniform in (0, 1) */
  uniform(): number {
    return (this.uint32() + 0.5) / 4294967296;
  }

  gaussian(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const t = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(t);
    return r * Math.cos(t);
  }
}
