// Sparse decode methods of the evaluation: the whole story runs on an f16 cache with key
// summaries, and every attention call reads only the blocks with the highest logit bounds,
// `fraction` of the rows each stream holds at that moment (the models' contexts are short, so
// the budget is a fraction of the context, not a fixed count), plus the sink block and the
// newest `recent` rows. Dense attention on the same cache is the f16 method.
import { KVCache } from '../../lib/index';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { AttentionDims } from '../llama2c/model';
import type { Method } from './runner';

export const SPARSE_FRACTIONS = [1 / 4, 1 / 8, 1 / 16];
const BLOCK_SIZE = 8;

export function sparseMethods(dims: AttentionDims, fractions: number[] = SPARSE_FRACTIONS): Method[] {
  const settings: CacheSettings = { keys: 'f16', values: 'f16', keySummaries: true, blockSize: BLOCK_SIZE };
  return fractions.map((fraction) => ({
    id: `sparse-${fraction}`,
    family: 'sparse decode (f16, key summaries)',
    label: `sparse, read ${fraction * 100}% of the rows (blocks of ${BLOCK_SIZE})`,
    param: fraction,
    rowBytesPerToken: KVCache.bytesPerToken({ ...settings, ...dims }),
    async run(ctx) {
      let length = () => 0;
      const options = {
        // Read at each call: the budget follows the stream's length.
        get sparse() {
          return { tokens: Math.max(BLOCK_SIZE, Math.ceil(fraction * length())), sinks: 4, recent: BLOCK_SIZE };
        },
      };
      const h = ctx.fresh(settings, options as never);
      length = () => h.backend.sequence.length(0, 0);
      try {
        if (ctx.prefix > 0) h.model.prefill(ctx.ids.slice(0, ctx.prefix), { chunkSize: ctx.chunk, logits: 'none' });
        return { logits: ctx.scoreRest(h.model), keptFraction: 1 };
      } finally {
        h.release();
      }
    },
  }));
}
