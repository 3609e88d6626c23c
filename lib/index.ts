// kvcompact: a paged, quantized, evictable and compactable KV cache for transformer
// inference engines in Node.
export { KVCache } from './kv-cache';
export { Sequence } from './sequence';
export { KVCacheError } from './errors';
export type { ErrorCode } from './errors';
export type {
  AppendOptions,
  AttentionOptions,
  CacheStats,
  Device,
  Devices,
  KVCacheConfig,
  KVCacheOptions,
  Storage,
  StreamRows,
} from './types';
