// Public option and result types of PrefixStore.
import type { Sequence } from '../sequence';
import type { KVCacheOptions } from '../types';

/** What a match found: 'plain' (rows that map one to one onto tokens, stored in chunks) or
 * 'compacted' (a whole evicted or compacted sequence); null on a miss. */
export type PrefixKind = 'plain' | 'compacted';

/** Options of every PrefixStore backend. */
export interface PrefixStoreOptions {
  /**
   * Identity of the model whose keys and values are stored (name and weights version, e.g.
   * 'llama-3-8b-instruct@sha256:...'). Part of every key: two models never share entries.
   * Default 'default'.
   */
  model?: string;
  /** Tokens per chunk of a plain sequence (prefixes are found at multiples of it). Default 256. */
  chunkTokens?: number;
  /** Each lookup that takes longer is abandoned and counted as a miss. Default 250 ms. */
  timeoutMs?: number;
  /**
   * Reads and writes of entries get timeoutMs plus their size at this rate before they are
   * abandoned (a slow disk or link is not a dead one). Default 25e6 (25 MB/s).
   */
  minBytesPerSecond?: number;
  /** Throw store failures (down, slow, damaged) instead of answering with a miss. Default false. */
  throwOnError?: boolean;
  /** Called with every store failure that was turned into a miss (for logs and metrics). */
  onError?: (error: Error) => void;
  /**
   * Which entry wins when a plain and a compacted entry of the same length are both stored:
   * default 'compacted' (smaller, and what was put there to be reused).
   */
  prefer?: PrefixKind;
  /** The cache options match() and delete() assume when called without a cache. */
  cache?: KVCacheOptions;
}

/** Options of PrefixStore.memory(). */
export interface MemoryStoreOptions extends PrefixStoreOptions {
  /** Byte budget; least recently used entries go first. Default 1 GiB. */
  maxBytes?: number;
}

/** Options of PrefixStore.directory(). */
export interface DirectoryStoreOptions extends PrefixStoreOptions {
  /**
   * Byte budget of the entries; least recently used (read or written) entries are removed
   * first, down to 90% of it, by the writing processes in turn. Default: none.
   */
  maxBytes?: number;
  /** Entries not used for this many seconds are gone (0: none). Default 0. */
  ttlSeconds?: number;
}

/** Options of PrefixStore.redis(). */
export interface RedisStoreOptions extends PrefixStoreOptions {
  /** redis://[user:password@]host:port[/db]. Default redis://127.0.0.1:6379. */
  url?: string;
  /** Namespace of every key in the database. Default 'kvc:'. */
  keyPrefix?: string;
  /** Largest single value written (entries are split into parts of this size). Default 8 MiB. */
  partBytes?: number;
  /** TTL of every key in seconds (0: none). Default 86400. */
  ttlSeconds?: number;
  /**
   * Connections a load of several megabytes is read over (entries spread over them in turn).
   * Default 2: each connection's socket buffers what the server sends while this process
   * checks and places the entries already in.
   */
  loadConnections?: number;
}

/** What PrefixStore.match() found. */
export interface PrefixMatch {
  /** Tokens covered by the longest stored prefix (0 on a miss). */
  length: number;
  /** The kind of the entry found, null on a miss. */
  kind: PrefixKind | null;
}

/** What PrefixStore.put() stored. */
export interface PutResult {
  /** How the sequence was stored. */
  kind: PrefixKind;
  /** Tokens the stored prefix covers (a plain put covers all of `tokens`). */
  length: number;
  /** Entries written by this call (entries already present are not written again). */
  entriesWritten: number;
  /** Bytes of the entries written by this call. */
  bytesWritten: number;
}

/** A prefix PrefixStore.load() imported. */
export interface LoadedPrefix {
  /** A new sequence of the cache, ready to continue at position `length`. */
  sequence: Sequence;
  /** Tokens the sequence covers. */
  length: number;
  /** The kind of the entry loaded. */
  kind: PrefixKind;
  /** The `meta` given to put (of the entry that ends the prefix). */
  meta: unknown;
  /** Export bytes imported. */
  bytes: number;
}

/** Counters of a PrefixStore since it was made. */
export interface PrefixStoreStats {
  /** Where the entries are kept. */
  backend: 'memory' | 'directory' | 'redis';
  /** match() calls. */
  matches: number;
  /** Lookups (by match or load) that found a prefix. */
  hits: number;
  /** Lookups that found none, failed, or found a damaged entry. */
  misses: number;
  /** put() calls. */
  puts: number;
  /** load() calls. */
  loads: number;
  /** Bytes of entries written. */
  bytesWritten: number;
  /** Export bytes imported by load(). */
  bytesRead: number;
  /** Entries found damaged or truncated (deleted, reported as misses). */
  corrupt: number;
  /** Operations abandoned after timeoutMs. */
  timeouts: number;
  /** Other store failures turned into misses. */
  errors: number;
  /** Entries held, where the backend can tell. */
  entries?: number;
  /** Bytes held, where the backend can tell. */
  bytes?: number;
}
