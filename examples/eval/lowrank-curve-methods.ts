// The low-rank curve (`lrc-…` methods): key rank x coefficient format x keys before / after
// RoPE x values (low-rank coefficients, or unprojected int8 / int4 rows), each as one storage
// method. Ids: lrc-{pre|post}-k{rank}{format}-v{rank|full}{format}, e.g.
// lrc-pre-k32int8-vfullint8 (pre-RoPE keys on rank-32 bases, int8 coefficients; values
// unprojected int8). Bytes per token count the bases spread over the 512-token window.
import { KVCache } from '../../lib/index';
import type { CacheSettings } from '../llama2c/kvcache-attention';
import type { AttentionDims } from '../llama2c/model';
import { CALIBRATION_ROWS, WINDOW_TOKENS } from './lowrank-methods';
import { MODEL_ROPE } from './rope-methods';
import type { Method } from './runner';
import { wholeStoryRun } from './whole-story';

type Format = 'f16' | 'int8' | 'int4';

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

export interface CurvePoint {
  pre: boolean;           // keys before RoPE (the cache applies RoPE)
  keyRank: number;
  keys: Format;
  valueRank: number;      // headDim: values unprojected
  values: Format;
  groupSize?: number;     // default min(32, gcd(ranks, headDim)); one group size per cache
  calibrationRows?: number;
}

export function curveSettings(D: number, p: CurvePoint): CacheSettings {
  const groupSize = p.groupSize ?? Math.min(32, gcd(gcd(p.keyRank, p.valueRank), D));
  const calibrationRows = p.calibrationRows ?? CALIBRATION_ROWS;
  return {
    keys: p.keys, values: p.values, groupSize,
    lowRank: { keys: p.keyRank, values: p.valueRank, calibrationRows },
    ...(p.pre ? { rope: MODEL_ROPE } : {}),
  };
}

export function curveId(D: number, p: CurvePoint): string {
  const v = p.valueRank === D ? 'full' : String(p.valueRank);
  const g = p.groupSize ? `-g${p.groupSize}` : '';
  const c = p.calibrationRows ? `-c${p.calibrationRows}` : '';
  return `lrc-${p.pre ? 'pre' : 'post'}-k${p.keyRank}${p.keys}-v${v}${p.values}${g}${c}`;
}

/** Key ranks 48, 40, 32, 24, 16 of 64 (3/4 .. 1/4 of head_dim). */
function keyRanks(D: number): number[] {
  return [...new Set([0.75, 0.625, 0.5, 0.375, 0.25].map((f) => Math.max(2, 2 * Math.round((f * D) / 2))))].filter((r) => r < D);
}

export function lowRankCurveMethods(dims: AttentionDims): Method[] {
  const D = dims.headDim;
  if (D < 16) return [];
  const points: CurvePoint[] = [];
  for (const pre of [false, true]) {
    for (const keyRank of keyRanks(D)) {
      for (const keys of ['f16', 'int8', 'int4'] as const) {
        for (const values of ['int8', 'int4'] as const) points.push({ pre, keyRank, keys, valueRank: D, values });
        points.push({ pre, keyRank, keys, valueRank: keyRank, values: keys });
        // values on their own, larger rank (values are less low-rank than pre-RoPE keys)
        if (keyRank < (3 * D) / 4) points.push({ pre, keyRank, keys, valueRank: (3 * D) / 4, values: keys });
      }
    }
  }
  // Around the 2x point (pre-RoPE rank 32, int8 coefficients, int8 values): bases fitted on
  // the whole 256-row prefix instead of its first 128 rows, and groups of 16 (a key row of 32
  // int8 coefficients is padded to 36 bytes either way; the values pay 4 bytes).
  const half = D / 2;
  points.push({ pre: true, keyRank: half, keys: 'int8', valueRank: D, values: 'int8', calibrationRows: 2 * CALIBRATION_ROWS });
  points.push({ pre: true, keyRank: half, keys: 'int8', valueRank: D, values: 'int8', groupSize: 16 });
  points.push({ pre: false, keyRank: half, keys: 'int8', valueRank: D, values: 'int8', calibrationRows: 2 * CALIBRATION_ROWS });
  return points.map((p) => {
    const settings = curveSettings(D, p);
    const v = (p.valueRank === D ? `values unprojected ${p.values}` : `values rank ${p.valueRank} ${p.values}`) +
      (p.groupSize ? `, groups of ${p.groupSize}` : '') + (p.calibrationRows ? `, ${p.calibrationRows} calibration rows` : '');
    return {
      id: curveId(D, p),
      family: `low-rank curve, keys ${p.pre ? 'before' : 'after'} RoPE`,
      label: `keys ${p.pre ? 'pre' : 'post'}-RoPE rank ${p.keyRank}/${D} ${p.keys}, ${v}`,
      param: p.keyRank,
      rowBytesPerToken: KVCache.bytesPerToken({ ...settings, ...dims } as never, WINDOW_TOKENS),
      run: wholeStoryRun(settings),
    } satisfies Method;
  });
}
