// The KVCacheError code a call throws, or 'none': for tests that compare refusals.
import type { KVCacheError } from '../../lib/index';

export function errorCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as KVCacheError).code;
  }
  return 'none';
}
