// kvcompact: a paged, quantized, evictable and compactable KV cache for transformer
// inference engines in Node.
export { KVCache } from './kv-cache';
export { Sequence } from './sequence';
export { KVCacheError } from './errors';
export { Compactor } from './compactor';
export type { CompactOptions, CompactorOptions, CompactionMethod, CompactionReport, ReferenceQueries, StreamCompactionReport } from './compactor';
export { EvictionPolicy, DEFAULT_RECENT, DEFAULT_SINKS } from './eviction-policy';
export type { CustomPolicyOptions, EvictionPolicyKind, ProtectOptions, ScoreFunction } from './eviction-policy';
export type { ErrorCode } from './errors';
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
  RecordedQueries,
  Storage,
  StreamRows,
  StreamScoreView,
} from './types';
