// Backend over a directory, safe for several processes on one machine: a value is written to
// a private temporary file, flushed (fsync) and then linked under its final name, which
// fails if another writer got there first; the directory is flushed after. A reader thus sees
// a whole value or none. Markers are small files, one per member, in a directory per set,
// each holding the key of the entry it announces.
//
// Size and age: an entry's modification time is its last use (set when written, and again
// whenever it is read), so the oldest modification time is the least recently used entry.
// With `ttlSeconds`, entries unused that long are treated as absent and removed; with
// `maxBytes`, a process that has written a tenth of the budget since its last sweep lists the
// entries and removes the least recently used until the rest fit in 90% of the budget,
// together with the markers of removed entries and temporary files a crashed writer left
// (so the directory may exceed the budget by a tenth of it per writing process in between).
// Several processes may sweep at once: each removal tolerates the file being gone, and a
// reader that opened a file before it was removed still reads all of it (POSIX unlink).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

import type { BackendStats, StoreBackend } from './backend';

/** Temporary files older than this were left by a writer that died. */
const STALE_TMP_MS = 3_600_000;

export interface DirectoryBackendOptions {
  /** Byte budget of the entries (Infinity: none). */
  maxBytes: number;
  /** Entries unused for longer are gone (0: kept until removed for space or deleted). */
  ttlSeconds: number;
}

function isMissing(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The files of a directory ([] when it is missing). */
async function list(dir: string): Promise<string[]> {
  try {
    return await fs.promises.readdir(dir);
  } catch (e) {
    if (isMissing(e)) return [];
    throw e;
  }
}

export class DirectoryBackend implements StoreBackend {
  readonly name = 'directory';
  readonly #root: string;
  readonly #o: DirectoryBackendOptions;
  /** Bytes this process wrote since its last sweep (Infinity before the first), and when that was. */
  #sinceSweep = Infinity;
  #lastSweep = -Infinity;
  #sweeping: Promise<void> | null = null;

  constructor(root: string, options: DirectoryBackendOptions = { maxBytes: Infinity, ttlSeconds: 0 }) {
    this.#root = path.resolve(root);
    this.#o = options;
    for (const sub of ['entries', 'markers', 'tmp']) fs.mkdirSync(path.join(this.#root, sub), { recursive: true });
  }

  #entryPath(key: string): string {
    return path.join(this.#root, 'entries', key.slice(1, 3), key);
  }

  #expired(mtimeMs: number, now = Date.now()): boolean {
    return this.#o.ttlSeconds > 0 && now - mtimeMs > 1000 * this.#o.ttlSeconds;
  }

  // Lookups are a stat each, synchronous: a few microseconds for a hit or a miss, cheaper than
  // a round trip through the thread pool for the hundred keys of a long prompt.
  async has(keys: readonly string[]): Promise<boolean[]> {
    return keys.map((k) => {
      const st = fs.statSync(this.#entryPath(k), { throwIfNoEntry: false });
      return st !== undefined && !this.#expired(st.mtimeMs);
    });
  }

  async get(keys: readonly string[]): Promise<(Uint8Array | null)[]> {
    return Promise.all(
      keys.map(async (k) => {
        const file = this.#entryPath(k);
        try {
          if (this.#o.ttlSeconds > 0 && this.#expired((await fs.promises.stat(file)).mtimeMs)) return null;
          const value = await fs.promises.readFile(file);
          // Used now: the entry moves to the young end of the LRU order (and its TTL restarts).
          if (this.#o.maxBytes !== Infinity || this.#o.ttlSeconds > 0) {
            const now = new Date();
            fs.promises.utimes(file, now, now).catch(() => undefined);
          }
          return value;
        } catch (e) {
          if (isMissing(e)) return null;
          throw e;
        }
      }),
    );
  }

  async putIfAbsent(key: string, value: Uint8Array): Promise<boolean> {
    const final = this.#entryPath(key);
    const st = fs.statSync(final, { throwIfNoEntry: false });
    if (st && !this.#expired(st.mtimeMs)) return false;
    if (value.length > this.#o.maxBytes) return false;
    // An expired entry is replaced: removed first, so that the link below can take its name.
    if (st) await fs.promises.rm(final, { force: true });
    const tmp = path.join(this.#root, 'tmp', `${key}.${process.pid}.${randomBytes(6).toString('hex')}`);
    const handle = await fs.promises.open(tmp, 'wx');
    try {
      await handle.writeFile(value);
      await handle.sync();
    } finally {
      await handle.close();
    }
    let stored = false;
    try {
      await fs.promises.mkdir(path.dirname(final), { recursive: true });
      // link() is atomic and refuses an existing name: set-if-absent across processes.
      await fs.promises.link(tmp, final);
      await fsyncDirectory(path.dirname(final));
      stored = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      await fs.promises.rm(tmp, { force: true });
    }
    if (stored) await this.#afterWrite(value.length);
    return stored;
  }

  /**
   * Starts a sweep (in the background: a put does not wait for it) once this process wrote a
   * tenth of the budget since its last sweep, or, with a TTL, half the TTL (at most an hour)
   * has passed since it.
   */
  async #afterWrite(bytes: number): Promise<void> {
    this.#sinceSweep += bytes;
    const now = Date.now();
    const full = this.#o.maxBytes !== Infinity && this.#sinceSweep >= this.#o.maxBytes / 10;
    const old = this.#o.ttlSeconds > 0 && now - this.#lastSweep >= Math.min(500 * this.#o.ttlSeconds, STALE_TMP_MS);
    if (!(full || old) || this.#sweeping) return;
    this.#sinceSweep = 0;
    this.#lastSweep = now;
    this.#sweeping = this.sweep()
      .catch(() => undefined) // a failed sweep is retried after the next tenth of the budget
      .finally(() => (this.#sweeping = null));
  }

  /**
   * Removes expired entries, then the least recently used ones until the rest fit in 90% of
   * maxBytes, the markers of entries that are gone, and temporary files older than an hour.
   */
  async sweep(): Promise<void> {
    const now = Date.now();
    const base = path.join(this.#root, 'entries');
    const entries: { file: string; size: number; mtimeMs: number }[] = [];
    for (const sub of await list(base)) {
      for (const f of await list(path.join(base, sub))) {
        const file = path.join(base, sub, f);
        const st = await fs.promises.stat(file).catch(() => undefined);
        if (st) entries.push({ file, size: st.size, mtimeMs: st.mtimeMs });
      }
    }
    const doomed = entries.filter((e) => this.#expired(e.mtimeMs, now));
    let held = entries.reduce((sum, e) => sum + e.size, 0) - doomed.reduce((sum, e) => sum + e.size, 0);
    if (held > this.#o.maxBytes) {
      const live = entries.filter((e) => !this.#expired(e.mtimeMs, now)).sort((a, b) => a.mtimeMs - b.mtimeMs);
      for (const e of live) {
        if (held <= 0.9 * this.#o.maxBytes) break;
        doomed.push(e);
        held -= e.size;
      }
    }
    await Promise.all(doomed.map((e) => fs.promises.rm(e.file, { force: true })));
    // Markers whose entry is gone (removed here, by another process, or deleted).
    const markers = path.join(this.#root, 'markers');
    for (const set of await list(markers)) {
      for (const member of await list(path.join(markers, set))) {
        const file = path.join(markers, set, member);
        const entry = await fs.promises.readFile(file, 'utf8').catch(() => '');
        // A marker of an older layout (empty) cannot be checked: it stays until its set is looked up.
        if (entry !== '' && !fs.existsSync(this.#entryPath(entry))) await fs.promises.rm(file, { force: true });
      }
    }
    const tmp = path.join(this.#root, 'tmp');
    for (const f of await list(tmp)) {
      const st = await fs.promises.stat(path.join(tmp, f)).catch(() => undefined);
      if (st && now - st.mtimeMs > STALE_TMP_MS) await fs.promises.rm(path.join(tmp, f), { force: true });
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    await Promise.all(keys.map((k) => fs.promises.rm(this.#entryPath(k), { force: true })));
  }

  async addMarker(set: string, member: string, entry: string): Promise<void> {
    const dir = path.join(this.#root, 'markers', set);
    await fs.promises.mkdir(dir, { recursive: true });
    await fs.promises.writeFile(path.join(dir, member), entry);
  }

  async markers(sets: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    for (const s of sets) {
      // stat first: a missing set (the common case) costs no thrown exception.
      const dir = path.join(this.#root, 'markers', s);
      if (fs.statSync(dir, { throwIfNoEntry: false }) === undefined) continue;
      try {
        out.push(...fs.readdirSync(dir));
      } catch (e) {
        if (!isMissing(e)) throw e;
      }
    }
    return out;
  }

  async removeMarker(set: string, member: string): Promise<void> {
    await fs.promises.rm(path.join(this.#root, 'markers', set, member), { force: true });
  }

  async stats(): Promise<BackendStats> {
    let entries = 0;
    let bytes = 0;
    const base = path.join(this.#root, 'entries');
    const now = Date.now();
    for (const sub of await list(base)) {
      for (const f of await list(path.join(base, sub))) {
        const st = await fs.promises.stat(path.join(base, sub, f)).catch(() => undefined);
        if (st && !this.#expired(st.mtimeMs, now)) (entries++, (bytes += st.size));
      }
    }
    return { entries, bytes };
  }

  /** Waits for a sweep in progress. */
  async close(): Promise<void> {
    await this.#sweeping;
  }
}
