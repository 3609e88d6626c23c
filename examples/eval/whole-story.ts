// The run of every storage-only method: the whole story on a fresh cache in the method's
// settings, the prefix prefilled without logits and the rest scored (nothing is transformed).
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { MethodRun, StoryContext } from './runner';

export function wholeStoryRun(settings: CacheSettings): (ctx: StoryContext) => Promise<MethodRun> {
  return async (ctx) => {
    const h = ctx.fresh(settings);
    try {
      if (ctx.prefix > 0) h.model.prefill(ctx.ids.slice(0, ctx.prefix), { chunkSize: ctx.chunk, logits: 'none' });
      return { logits: ctx.scoreRest(h.model), keptFraction: 1 };
    } finally {
      h.release();
    }
  };
}
