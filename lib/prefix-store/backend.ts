// What a PrefixStore needs from where it keeps entries: opaque values under string keys,
// written only if absent, plus small sets of markers. Backends never see rows or tokens;
// every value they return is verified (entry.ts) before use, so a backend may lose, damage
// or truncate values and the store still only ever imports what was written.
import type { Parts } from './parts';

export interface BackendStats {
  /** Entries and their bytes held, where the backend can tell cheaply (undefined otherwise). */
  entries?: number;
  bytes?: number;
}

/**
 * Given to get(): a backend that reads values one after another may hand each over as soon as
 * it is complete (index into the keys), so that the caller checks and places it while the
 * rest arrive. Values not handed over are only in get()'s result.
 */
export type OnValue = (index: number, value: Uint8Array) => void;

export interface StoreBackend {
  readonly name: 'memory' | 'directory' | 'redis';
  /** Whether each key holds an entry (one round trip). */
  has(keys: readonly string[]): Promise<boolean[]>;
  /**
   * The values under the keys (null where absent), fetched together; a value may come as
   * several parts. A backend that reads into memory it allocates may take it from
   * `allocate` (which the caller reuses after the values were used).
   */
  get(keys: readonly string[], allocate?: (bytes: number) => Uint8Array, onValue?: OnValue): Promise<(Uint8Array | Parts | null)[]>;
  /**
   * Stores the value unless the key exists; true when this call stored it. Never leaves a
   * partial value visible. The value is handed over: the caller does not change it afterwards.
   */
  putIfAbsent(key: string, value: Uint8Array): Promise<boolean>;
  delete(keys: readonly string[]): Promise<void>;
  /**
   * Adds a member to a marker set: it announces the entry under `entry`, and goes when the
   * backend drops that entry (where it can tell; readers confirm every marker anyway).
   */
  addMarker(set: string, member: string, entry: string): Promise<void>;
  /** The union of the members of the marker sets. */
  markers(sets: readonly string[]): Promise<string[]>;
  /** Removes a member whose entry a reader found gone (markers may outlive entries). */
  removeMarker?(set: string, member: string): Promise<void>;
  /** has(keys) and markers(sets) together, where the backend can send both as one request. */
  lookup?(keys: readonly string[], sets: readonly string[]): Promise<[boolean[], string[]]>;
  stats(): Promise<BackendStats>;
  close(): Promise<void>;
}
