// Memory lent to one load at a time and kept for the next. A load of a long prefix moves a
// gigabyte through buffers it drops right after the import; fresh memory costs a page fault
// per 4 KiB on first touch (0.5–0.8 GB/s on the machines measured, slower than the copy
// itself), so the buffers of the last load are kept and reused, and given back to the system
// after `idleMs` without a load.
export class Scratch {
  #buffer: Buffer | null = null;
  #busy = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(readonly idleMs: number) {}

  /**
   * `bytes` of memory (the kept buffer when it is free and large enough; fresh otherwise) and
   * the function that ends the loan. The contents are whatever the last load left.
   */
  take(bytes: number): { buffer: Buffer; done: () => void } {
    if (this.#busy) return { buffer: Buffer.allocUnsafeSlow(bytes), done: () => {} };
    this.#busy = true;
    clearTimeout(this.#timer);
    if (!this.#buffer || this.#buffer.length < bytes) {
      this.#buffer = null; // the old one can go before the new one is made
      this.#buffer = Buffer.allocUnsafeSlow(bytes);
    }
    let returned = false;
    return {
      buffer: this.#buffer.subarray(0, bytes),
      done: () => {
        if (returned) return;
        returned = true;
        this.#busy = false;
        this.#timer = setTimeout(() => (this.#buffer = null), this.idleMs);
        this.#timer.unref();
      },
    };
  }

  /** Drops the kept buffer (a loan in progress keeps its memory until it ends). */
  clear(): void {
    clearTimeout(this.#timer);
    this.#buffer = null;
  }
}
