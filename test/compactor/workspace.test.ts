// One compaction workspace per cache (ARCHITECTURE §9 and STYLE "a caller-owned workspace"):
// the scratch memory of compaction belongs to the cache's backend, is reported by
// stats().workspaceBytes, is reused by the next compaction, is not shared with other caches,
// and goes away with trimWorkspace() and dispose().
import { describe, expect, it } from 'vitest';
import { Compactor, EvictionPolicy, KVCache, KVCacheError } from '../../lib/index';
import { llmStreams } from './llm-stream';

const D = 64;

function filled(T: number, layers = 1, kvHeads = 2) {
  const cache = new KVCache({ layers, kvHeads, headDim: D, keys: 'f16', values: 'f16', threads: 1 });
  const s = llmStreams({ tokens: T, kvHeads, headDim: D, queries: 128, heldOut: 1 }, 11);
  const seq = cache.createSequence();
  for (let l = 0; l < layers; l++) {
    seq.append(l, s.keys, s.values);
    for (let i = 0; i < 128; i++) seq.attention(l, s.queries.subarray(i * kvHeads * D, (i + 1) * kvHeads * D), { recordQueries: true });
  }
  return { cache, seq };
}

describe('compaction workspace', () => {
  it('is owned by the cache: counted after a compaction, reused, not shared, freed by trimWorkspace', async () => {
    const T = 1024;
    const a = filled(T);
    const b = filled(T);
    expect(a.cache.stats().workspaceBytes).toBe(0);
    const compactor = new Compactor({ ratio: 0.25, threads: 1 });
    await compactor.compact(a.seq.fork());
    const first = a.cache.stats().workspaceBytes;
    // At least the decoded keys and values of one stream (kept for the next call) and the
    // scores of its reference queries against every row.
    expect(first).toBeGreaterThan(2 * T * D * 4 + 128 * T * 4);
    // Another cache's compactions do not use (or count) this cache's workspace.
    expect(b.cache.stats().workspaceBytes).toBe(0);
    // The same work again reuses the warm buffers instead of adding new ones.
    await compactor.compact(a.seq.fork());
    expect(a.cache.stats().workspaceBytes).toBeLessThanOrEqual(first);
    compactor.compactSync(a.seq.fork());
    expect(a.cache.stats().workspaceBytes).toBeLessThanOrEqual(first);

    a.cache.trimWorkspace();
    expect(a.cache.stats().workspaceBytes).toBe(0);
    // Compaction still works after a trim (and allocates again).
    const report = await compactor.compact(a.seq);
    expect(report.rowsAfter).toBeLessThan(report.rowsBefore);
    expect(a.cache.stats().workspaceBytes).toBeGreaterThan(0);

    a.cache.dispose();
    expect(() => a.cache.stats()).toThrowError(KVCacheError);
    expect(() => a.cache.trimWorkspace()).toThrowError(KVCacheError);
    b.cache.dispose();
  });

  it('eviction keeps no scratch memory in the workspace', () => {
    const { cache, seq } = filled(512);
    seq.evict(EvictionPolicy.snapKV({ window: 8, pool: 5 }), { ratio: 0.5 });
    seq.evict(EvictionPolicy.keyNorm(), { ratio: 0.5 });
    expect(cache.stats().workspaceBytes).toBe(0);
    cache.dispose();
  });

  it('dispose releases the workspace: compacting and disposing many caches does not accumulate memory', async () => {
    // Each cache holds several MB of workspace after its compaction. If dispose leaked it,
    // resident memory would grow by rounds × that; freed memory is reused by the next cache.
    const rounds = 24;
    let workspace = 0;
    let baseline = 0;
    for (let r = 0; r < rounds; r++) {
      const { cache, seq } = filled(4096, 1, 1);
      await new Compactor({ ratio: 0.1, threads: 1 }).compact(seq);
      workspace = cache.stats().workspaceBytes;
      expect(workspace).toBeGreaterThan(4 << 20);
      cache.dispose();
      if (r === 3) baseline = process.memoryUsage().rss; // after the allocator has warmed up
    }
    const growth = process.memoryUsage().rss - baseline;
    expect(growth).toBeLessThan(((rounds - 4) * workspace) / 3);
  }, 120_000);
});
