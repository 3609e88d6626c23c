// Part 1 of `npm run demo`: what each storage format costs per token and how fast decode
// attention reads it, on one Llama-3-8B-shaped layer of synthetic LLM-like keys and values
// (bench/support/synthetic-streams.ts: outlier key channels, an attention sink, local
// attention). The error column is the attention output's distance from f32 storage's.
import { KVCache, type KVCacheOptions } from '../../lib/index';
import { syntheticKV, syntheticQueries } from '../../bench/support/synthetic-streams';
import type { Progress } from '../shared/progress';
import { formatBytes, median, table } from './output';

export const SHAPE = { kvHeads: 8, headDim: 128, queryHeads: 32 } as const;
export const MODEL_LAYERS = 32;

interface Format {
  name: string;
  options: Partial<KVCacheOptions>;
}

export const FORMATS: Format[] = [
  { name: 'f32', options: { keys: 'f32', values: 'f32' } },
  { name: 'f16', options: { keys: 'f16', values: 'f16' } },
  { name: 'bf16', options: { keys: 'bf16', values: 'bf16' } },
  { name: 'int8', options: { keys: 'int8', values: 'int8' } },
  { name: 'int8 rotated', options: { keys: 'int8', values: 'int8', rotate: true } },
  { name: 'K int8 / V int4 rotated', options: { keys: 'int8', values: 'int4', rotate: true } },
  { name: 'int4 rotated', options: { keys: 'int4', values: 'int4', rotate: true } },
];

export interface FormatRow {
  name: string;
  bytesPerToken: number;
  modelBytesPerToken: number;
  bytesUsed: number;
  decodeUs: number;
  relErr: number;
}

export interface FormatsArgs {
  tokens: number;
  steps: number;
  chunk: number;
  threads: number | undefined;
}

export function runFormats(a: FormatsArgs, progress: Progress): { rows: FormatRow[]; text: string } {
  progress.update('generating synthetic keys and values…', true);
  const streams = syntheticKV({ tokens: a.tokens + a.steps, ...SHAPE }, 20240611);
  const queries = syntheticQueries(streams, a.steps, 11); // query s sits at position tokens + s
  const rowElems = SHAPE.kvHeads * SHAPE.headDim;
  const qElems = SHAPE.queryHeads * SHAPE.headDim;

  const rows: FormatRow[] = [];
  let reference: Float32Array | undefined;
  for (const [fi, format] of FORMATS.entries()) {
    const options: KVCacheOptions = { layers: 1, ...SHAPE, ...format.options, ...(a.threads ? { threads: a.threads } : {}) };
    const cache = new KVCache(options);
    const seq = cache.createSequence();
    const label = `formats [${fi + 1}/${FORMATS.length}] ${format.name}`;
    for (let t = 0; t < a.tokens; t += a.chunk) {
      const end = Math.min(a.tokens, t + a.chunk);
      seq.append(0, streams.keys.subarray(t * rowElems, end * rowElems), streams.values.subarray(t * rowElems, end * rowElems));
      progress.update(`${label}: prefill ${end}/${a.tokens} tokens`);
    }
    const bytesUsed = cache.stats().bytesUsed;
    const outputs = new Float32Array(a.steps * qElems);
    const times: number[] = [];
    for (let s = 0; s < a.steps; s++) {
      const t = a.tokens + s;
      seq.append(0, streams.keys.subarray(t * rowElems, (t + 1) * rowElems), streams.values.subarray(t * rowElems, (t + 1) * rowElems));
      const out = outputs.subarray(s * qElems, (s + 1) * qElems);
      const b = performance.now();
      seq.attention(0, queries.subarray(s * qElems, (s + 1) * qElems), { out });
      times.push((performance.now() - b) * 1000);
      progress.update(`${label}: decode step ${s + 1}/${a.steps}`);
    }
    reference ??= outputs;
    rows.push({
      name: format.name,
      bytesPerToken: cache.stats().bytesPerToken,
      modelBytesPerToken: KVCache.bytesPerToken({ ...options, layers: MODEL_LAYERS }),
      bytesUsed,
      decodeUs: median(times),
      relErr: relativeError(outputs, reference, qElems),
    });
    cache.dispose();
  }

  const f32 = rows[0]!;
  const lines = [
    `1. Memory per token and decode speed per storage format: ${a.tokens} context tokens, ${a.steps} decode steps`,
    '',
    table(
      ['storage (keys / values)', 'bytes/token (layer)', '32-layer model', 'vs f32', `KV at ${a.tokens} tokens`, 'decode µs (median)', 'KV read GB/s', 'attention error vs f32'],
      rows.map((r) => [
        r.name,
        String(Math.round(r.bytesPerToken)),
        formatBytes(r.modelBytesPerToken),
        `${(f32.bytesPerToken / r.bytesPerToken).toFixed(2)}×`,
        formatBytes(r.bytesUsed),
        r.decodeUs.toFixed(0),
        (r.bytesUsed / (r.decodeUs * 1e3)).toFixed(1),
        r === f32 ? '0 (reference)' : r.relErr.toExponential(1),
      ]),
    ),
  ];
  const mixed = rows.find((r) => r.name === 'K int8 / V int4 rotated');
  if (mixed) {
    const ctx = 128 * 1024;
    lines.push(
      '',
      `A 32-layer model at 128K tokens: ${formatBytes(f32.modelBytesPerToken * ctx)} of KV in f32, ` +
        `${formatBytes(rows[1]!.modelBytesPerToken * ctx)} in f16, ${formatBytes(mixed.modelBytesPerToken * ctx)} with keys int8 / values int4.`,
      'decode µs: attention of one new token (32 query heads) over the whole layer, after appending it; GB/s: KV bytes read per second;\n' +
        'error: ‖out − out_f32‖ / ‖out_f32‖ per query token, mean.',
    );
  }
  return { rows, text: lines.join('\n') };
}

/** Mean over query tokens of ‖a − b‖ / ‖b‖ (each token's output of all query heads). */
export function relativeError(a: Float32Array, b: Float32Array, tokenElems: number): number {
  let sum = 0;
  const n = a.length / tokenElems;
  for (let t = 0; t < n; t++) {
    let num = 0;
    let den = 0;
    for (let i = t * tokenElems; i < (t + 1) * tokenElems; i++) {
      num += (a[i]! - b[i]!) ** 2;
      den += b[i]! ** 2;
    }
    sum += Math.sqrt(num / (den || 1));
  }
  return sum / n;
}
