// kvcompact: a paged, quantized, evictable and compactable KV cache for transformer
// inference engines in Node.
import { KVCache } from './kv-cache';
import { Sequence } from './sequence';
import { KVCacheError } from './errors';
import { Compactor } from './compactor';
import { EvictionPolicy, DEFAULT_RECENT, DEFAULT_SINKS } from './eviction-policy';
import { loadAtImport } from './native/binding';
import { version } from './version';

// A missing or unloadable binary fails here, at import, with the report of what was tried.
loadAtImport();

export { version } from './version';
export { KVCache } from './kv-cache';
export { Sequence } from './sequence';
export { KVCacheError } from './errors';
export { Compactor } from './compactor';
export type { CompactOptions, CompactorOptions, CompactionMethod, CompactionReport, ReferenceQueries, StreamCompactionReport } from './compactor';
export { EvictionPolicy, DEFAULT_RECENT, DEFAULT_SINKS } from './eviction-policy';
export { Maintainer } from './maintain';
export type { MaintainOptions, MaintenancePass, MaintenanceSkip } from './maintain';
export { PROFILES } from './profiles';
export type { Profile, ProfileName, ProfileShape } from './profiles';
export type { CustomPolicyOptions, EvictionPolicyKind, ProtectOptions, ScoreFunction } from './eviction-policy';
export type { ErrorCode } from './errors';
export { PrefixStore } from './prefix-store/index';
export type {
  DirectoryStoreOptions, LoadedPrefix, MemoryStoreOptions, PrefixKind, PrefixMatch, PrefixStoreOptions, PrefixStoreStats, PutResult, RedisStoreOptions,
} from './prefix-store/index';
export type {
  AppendOptions,
  AttentionOptions,
  CacheStats,
  Device,
  Precision,
  Devices,
  EvictionBudget,
  EvictionReport,
  KVCacheConfig,
  KVCacheOptions,
  LowRankBases,
  LowRankConfig,
  RecordedQueries,
  RopeOptions,
  SparseOptions,
  SparseSelection,
  Storage,
  StreamRows,
  StreamScoreView,
} from './types';

/**
 * Every runtime export as one object, for `import kvcompact from 'kvcompact'` (ESM) or
 * `import kvcompact from 'kvcompact'` with esModuleInterop (CommonJS). Named imports are the
 * same objects.
 */
const kvcompact = { version, KVCache, Sequence, KVCacheError, Compactor, EvictionPolicy, DEFAULT_RECENT, DEFAULT_SINKS } as const;
export default kvcompact;
