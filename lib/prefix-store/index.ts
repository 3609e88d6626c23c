// PrefixStore and its types (lib/prefix-store/): reuse of exported sequences by token prefix.
export { PrefixStore } from './prefix-store';
export type {
  DirectoryStoreOptions, LoadedPrefix, MemoryStoreOptions, PrefixKind, PrefixMatch, PrefixStoreOptions, PrefixStoreStats, PutResult, RedisStoreOptions,
} from './types';
