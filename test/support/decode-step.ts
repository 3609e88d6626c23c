// A decode step of the maintenance tests: on every layer, append one random token and attend
// with one random query, recording it (so compaction has reference queries). Returns the
// appended keys per layer ([kvHeads × headDim] each), to check the rows read back.
import type { Sequence } from '../../lib/index';
import { randn, type Rng } from '../reference/random';

export function decodeStep(rng: Rng, seq: Sequence): Float32Array[] {
  const c = seq.cache.config;
  const row = c.kvHeads * c.headDim;
  const keys: Float32Array[] = [];
  for (let l = 0; l < c.layers; l++) {
    const k = randn(rng, row);
    seq.append(l, k, randn(rng, row));
    seq.attention(l, randn(rng, c.queryHeads * c.headDim), { recordQueries: true });
    keys.push(k);
  }
  return keys;
}

/** One turn of the event loop (a finished maintenance pass is swapped in). */
export const tick = (): Promise<void> => new Promise<void>((r) => setImmediate(r));
