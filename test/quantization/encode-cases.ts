// The configurations and rows of the SIMD-vs-scalar bit-exactness test: every quantized
// format with every group size that divides head_dim, rotated or not, f32 and f16 input,
// and rows mixing Gaussian data with the groups that stress the encoders:
//   'equal'     every element of the group the same         -> int4 scale 0, int8 q = ±127
//   'zeros±'    +0 and -0 mixed, alone or with positives / negatives (the sign of a zero min)
//   'huge'      one element near or at the float32 maximum (the f16 scale saturates at 65504;
//               non-finite inputs are rejected by append); not in rotated rows, where they
//               overflow to Inf / NaN (outside the bit-exact contract); f16 input: ±65504
//   'tiny'      magnitudes ~1e-8 (the f16 scale is subnormal or 0)
//   'outlier'   one channel 1000× the others
import { StreamRng } from '../../bench/support/synthetic-streams';

export type QuantStorage = 'int8' | 'int4' | 'f16' | 'bf16' | 'f32';

export interface EncodeCase {
  name: string;
  kvHeads: number;
  headDim: number;
  groupSize: number;
  keys: QuantStorage;
  values: QuantStorage;
  rotate: boolean;
  rotateValues: boolean;
  input: 'f32' | 'f16';
  tokens: number;
}

export function encodeCases(): EncodeCase[] {
  const cases: EncodeCase[] = [];
  for (const headDim of [64, 128, 256, 96, 8]) {
    for (const groupSize of [8, 16, 32, 64, 128]) {
      if (headDim % groupSize !== 0 || groupSize > headDim) continue;
      for (const rotate of [false, true]) {
        if (rotate && (headDim & (headDim - 1)) !== 0) continue;
        for (const input of ['f32', 'f16'] as const) {
          cases.push({
            name: `D${headDim} G${groupSize} int8/int4${rotate ? ' rotated' : ''} ${input}`,
            kvHeads: 2, headDim, groupSize, keys: 'int8', values: 'int4', rotate, rotateValues: false, input, tokens: 37,
          });
          cases.push({
            name: `D${headDim} G${groupSize} int4/int8${rotate ? ' rotated k+v' : ''} ${input}`,
            kvHeads: 2, headDim, groupSize, keys: 'int4', values: 'int8', rotate, rotateValues: rotate, input, tokens: 37,
          });
        }
      }
    }
  }
  for (const rotate of [false, true]) {
    cases.push({ name: `D128 f16/bf16${rotate ? ' rotated k+v' : ''}`, kvHeads: 2, headDim: 128, groupSize: 32,
      keys: 'f16', values: 'bf16', rotate, rotateValues: rotate, input: 'f32', tokens: 37 });
  }
  return cases;
}

/** Token-major [T, kvHeads, headDim] keys and values; every group of every row gets a pattern. */
export function edgeCaseRows(c: EncodeCase, seed: number): { keys: Float32Array; values: Float32Array } {
  const rng = new StreamRng(seed ^ 0xc0de);
  const make = (): Float32Array => {
    const n = c.tokens * c.kvHeads * c.headDim;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = rng.randn();
    const G = c.groupSize;
    for (let g0 = 0; g0 < n; g0 += G) {
      // Rotation mixes ±inf or two huge values of a row into NaN (inf - inf), and NaN inputs are
      // outside the bit-exact contract of the int4 encoder (the reference's fmin/fmax skip NaN in
      // an order a vector reduction cannot reproduce), so rotated rows get finite patterns only.
      let kind = rng.u32() % 12;
      if (c.rotate && (kind === 4 || kind === 5 || (kind === 6 && c.input === 'f16'))) kind = 8; // 6 is inf in f16
      if (c.input === 'f16' && (kind === 4 || kind === 5 || kind === 6)) kind = 9; // beyond f16: Inf bits
      const at = g0 + (rng.u32() % G);
      const signedZero = (): number => (rng.u32() & 1 ? -0 : 0);
      switch (kind) {
        case 0: x.fill(x[g0]!, g0, g0 + G); break; // equal
        case 1: for (let i = g0; i < g0 + G; i++) x[i] = signedZero(); break; // zeros±
        case 2: for (let i = g0; i < g0 + G; i++) x[i] = Math.abs(x[i]!); x[at] = signedZero(); x[g0 + (rng.u32() % G)] = signedZero(); break;
        case 3: for (let i = g0; i < g0 + G; i++) x[i] = -Math.abs(x[i]!); x[at] = signedZero(); break;
        case 4: x[at] = rng.u32() & 1 ? 3.0e38 : -3.0e38; break; // huge
        case 5: x[at] = rng.u32() & 1 ? 3.4028234663852886e38 : -3.4028234663852886e38; break; // float32 max
        case 9: x[at] = rng.u32() & 1 ? 65504 : -65504; break; // f16 max
        case 6: x[at] = 65504 * 127 * 1.01; break; // int8 scale just above the f16 maximum
        case 7: for (let i = g0; i < g0 + G; i++) x[i] = x[i]! * 1e-8; break; // tiny
        case 8: x[at] = x[at]! * 1000; break; // outlier
        default: break; // Gaussian
      }
    }
    return x;
  };
  return { keys: make(), values: make() };
}
