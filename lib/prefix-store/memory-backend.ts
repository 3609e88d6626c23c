// In-process backend: a Map in least-recently-used order under a byte budget. The embedded
// default: no setup, shared by the caches of one process, gone when the process ends.
import type { BackendStats, StoreBackend } from './backend';

export class MemoryBackend implements StoreBackend {
  readonly name = 'memory';
  readonly #maxBytes: number;
  #bytes = 0;
  /** Insertion order is recency order: a hit moves its key to the end. */
  readonly #entries = new Map<string, Uint8Array>();
  readonly #markers = new Map<string, Set<string>>();
  /** The markers announcing each entry, dropped with it: markers never outgrow the budget's entries. */
  readonly #announcedBy = new Map<string, [set: string, member: string][]>();

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  async has(keys: readonly string[]): Promise<boolean[]> {
    return keys.map((k) => this.#entries.has(k));
  }

  async get(keys: readonly string[]): Promise<(Uint8Array | null)[]> {
    return keys.map((k) => {
      const v = this.#entries.get(k);
      if (v === undefined) return null;
      this.#entries.delete(k);
      this.#entries.set(k, v);
      return v;
    });
  }

  async putIfAbsent(key: string, value: Uint8Array): Promise<boolean> {
    if (this.#entries.has(key) || value.length > this.#maxBytes) return false;
    for (const [old, v] of this.#entries) {
      if (this.#bytes + value.length <= this.#maxBytes) break;
      this.#drop(old, v);
    }
    // Kept as given: the store hands over a freshly encoded frame it never touches again.
    this.#entries.set(key, value);
    this.#bytes += value.length;
    return true;
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const k of keys) {
      const v = this.#entries.get(k);
      if (v !== undefined) this.#drop(k, v);
    }
  }

  #drop(key: string, value: Uint8Array): void {
    this.#entries.delete(key);
    this.#bytes -= value.length;
    for (const [set, member] of this.#announcedBy.get(key) ?? []) this.#removeMarker(set, member);
    this.#announcedBy.delete(key);
  }

  async addMarker(set: string, member: string, entry: string): Promise<void> {
    // A marker for an entry that is not held (refused as too large, or already evicted) would only be a stale one.
    if (!this.#entries.has(entry)) return;
    let s = this.#markers.get(set);
    if (!s) this.#markers.set(set, (s = new Set()));
    if (s.has(member)) return;
    s.add(member);
    let list = this.#announcedBy.get(entry);
    if (!list) this.#announcedBy.set(entry, (list = []));
    list.push([set, member]);
  }

  #removeMarker(set: string, member: string): void {
    const s = this.#markers.get(set);
    if (!s) return;
    s.delete(member);
    if (s.size === 0) this.#markers.delete(set);
  }

  async markers(sets: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    for (const name of sets) {
      const s = this.#markers.get(name);
      if (s) out.push(...s);
    }
    return out;
  }

  async stats(): Promise<BackendStats> {
    return { entries: this.#entries.size, bytes: this.#bytes };
  }

  /** @internal Marker sets held (tests: none outlive their entries). */
  get markerSets(): number {
    return this.#markers.size;
  }

  async close(): Promise<void> {
    this.#entries.clear();
    this.#markers.clear();
    this.#announcedBy.clear();
    this.#bytes = 0;
  }
}
