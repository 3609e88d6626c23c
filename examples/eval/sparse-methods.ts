// Sparse decode methods of the evaluation: the story runs on an f16 cache with key summaries;
// the prefix is prefilled densely, then every scored token is a decode step (Tq = 1) that reads
// only the blocks with the highest logit bounds,
// `fraction` of the rows each stream holds at that moment (the models' contexts are short, so
// the budget is a fraction of the context, not a fixed count), plus the sink block and the
// newest `recent` rows. Dense attention on the same cache is the f16 method. The `-rope`
// variants run on a cache holding keys before RoPE (cache option `rope`: summaries after RoPE
// at the stored positions, queries rotated at theirs); their dense twin is rope-f16.
import { KVCache } from '../../lib/index';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { AttentionDims } from '../llama2c/model';
import { MODEL_ROPE } from './rope-methods';
import type { Method } from './runner';

export const SPARSE_FRACTIONS = [1 / 4, 1 / 8, 1 / 16];
const BLOCK_SIZE = 8;

export function sparseMethods(dims: AttentionDims, fractions: number[] = SPARSE_FRACTIONS): Method[] {
  const plain: CacheSettings = { keys: 'f16', values: 'f16', keySummaries: true, blockSize: BLOCK_SIZE };
  const variants = [
    { tag: '', what: '', settings: plain },
    { tag: '-rope', what: ', keys before RoPE', settings: { ...plain, rope: MODEL_ROPE } as CacheSettings },
  ];
  return variants.flatMap(({ tag, what, settings }) => fractions.map((fraction): Method => ({
    id: `sparse${tag}-${fraction}`,
    family: `sparse decode (f16, key summaries${what})`,
    label: `sparse${what}, read ${fraction * 100}% of the rows (blocks of ${BLOCK_SIZE})`,
    param: fraction,
    rowBytesPerToken: KVCache.bytesPerToken({ ...settings, ...dims }),
    async run(ctx) {
      const h = ctx.fresh(settings);
      const { ids, prefix: p } = ctx;
      const n = ids.length;
      const V = ctx.checkpoint.config.vocabSize;
      try {
        // The prefix is a dense prefill, as an engine would run it; then every scored token is a
        // decode step (one query token) reading only the blocks sparse attention picks.
        if (p > 0) h.model.prefill(ids.slice(0, p), { chunkSize: ctx.chunk, logits: 'none' });
        const seq = h.backend.sequence;
        h.backend.attentionOptions = {
          // Read at each call: the budget follows the stream's length.
          get sparse() {
            return { tokens: Math.max(BLOCK_SIZE, Math.ceil(fraction * seq.length(0, 0))), sinks: 4, recent: BLOCK_SIZE };
          },
        } as never;
        const logits = new Float32Array((n - 1 - p) * V);
        for (let t = p; t < n - 1; t++) logits.set(h.model.forward([ids[t]!], 'all'), (t - p) * V);
        return { logits, keptFraction: 1 };
      } finally {
        h.release();
      }
    },
  })));
}
