// Backend over a directory, safe for several processes on one machine: a value is written to
// a private temporary file, flushed (fsync) and then linked under its final name, which
// fails if another writer got there first; the directory is flushed after. A reader thus sees
// a whole value or none. Markers are empty files, one per member, in a directory per set.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

import type { BackendStats, StoreBackend } from './backend';

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

export class DirectoryBackend implements StoreBackend {
  readonly name = 'directory';
  readonly #root: string;

  constructor(root: string) {
    this.#root = path.resolve(root);
    for (const sub of ['entries', 'markers', 'tmp']) fs.mkdirSync(path.join(this.#root, sub), { recursive: true });
  }

  #entryPath(key: string): string {
    return path.join(this.#root, 'entries', key.slice(1, 3), key);
  }

  // Lookups are a stat each, synchronous: a few microseconds for a hit or a miss, cheaper than
  // a round trip through the thread pool for the hundred keys of a long prompt.
  async has(keys: readonly string[]): Promise<boolean[]> {
    return keys.map((k) => fs.statSync(this.#entryPath(k), { throwIfNoEntry: false }) !== undefined);
  }

  async get(keys: readonly string[]): Promise<(Uint8Array | null)[]> {
    return Promise.all(
      keys.map(async (k) => {
        try {
          return await fs.promises.readFile(this.#entryPath(k));
        } catch (e) {
          if (isMissing(e)) return null;
          throw e;
        }
      }),
    );
  }

  async putIfAbsent(key: string, value: Uint8Array): Promise<boolean> {
    const final = this.#entryPath(key);
    if (fs.existsSync(final)) return false;
    const tmp = path.join(this.#root, 'tmp', `${key}.${process.pid}.${randomBytes(6).toString('hex')}`);
    const handle = await fs.promises.open(tmp, 'wx');
    try {
      await handle.writeFile(value);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await fs.promises.mkdir(path.dirname(final), { recursive: true });
      // link() is atomic and refuses an existing name: set-if-absent across processes.
      await fs.promises.link(tmp, final);
      await fsyncDirectory(path.dirname(final));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    } finally {
      await fs.promises.rm(tmp, { force: true });
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    await Promise.all(keys.map((k) => fs.promises.rm(this.#entryPath(k), { force: true })));
  }

  async addMarker(set: string, member: string): Promise<void> {
    const dir = path.join(this.#root, 'markers', set);
    await fs.promises.mkdir(dir, { recursive: true });
    await fs.promises.writeFile(path.join(dir, member), '');
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

  async stats(): Promise<BackendStats> {
    let entries = 0;
    let bytes = 0;
    const base = path.join(this.#root, 'entries');
    for (const sub of await fs.promises.readdir(base)) {
      for (const f of await fs.promises.readdir(path.join(base, sub))) {
        const st = await fs.promises.stat(path.join(base, sub, f)).catch(() => undefined);
        if (st) (entries++, (bytes += st.size));
      }
    }
    return { entries, bytes };
  }

  async close(): Promise<void> {}
}
