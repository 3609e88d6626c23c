// append + read round trip: stored rows are bit-exact against the reference formats (f32 exact,
// f16/bf16 rounded to nearest even), for keys and values with separate storage, Float32Array and
// Uint16Array (f16 bits) input, T not a multiple of blockSize, several appends, positions.
import { describe, expect, it } from 'vitest';
import { KVCache } from '../../lib/index';
import { type PlainStorage, toF16Bits } from '../reference/formats-reference';
import { arange, randn, testRng } from '../reference/random';
import { Shadow, type Shape, randomRows } from './helpers';

const STORAGES: PlainStorage[] = ['f32', 'f16', 'bf16'];

function setup(keys: PlainStorage, values: PlainStorage, headDim = 8, blockSize = 16) {
  const shape: Shape = { layers: 2, kvHeads: 2, headDim, keys, values };
  const cache = new KVCache({ layers: 2, kvHeads: 2, headDim, blockSize, keys, values, threads: 1 });
  return { shape, cache, seq: cache.createSequence(), shadow: new Shadow(shape) };
}

/** Inputs that sit exactly on rounding ties of f16 and bf16, plus range edges, then random values. */
function tieInputs(n: number, rng: ReturnType<typeof testRng>): Float32Array {
  const special = [
    1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -11), 65504, 65519, 65520, -65520, 2 ** -25, 3 * 2 ** -25,
    2 ** -24, 2 ** -14 - 2 ** -26, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -0, 0, 1e-30, 3e38, -7.5,
  ];
  const x = randn(rng, n, 4);
  for (let i = 0; i < special.length && i < n; i++) x[i * 3 % n] = special[i]!;
  return x;
}

describe('append + read', () => {
  it('a new sequence is empty, nextPosition 0', () => {
    const { cache, seq } = setup('f16', 'f16');
    for (let l = 0; l < 2; l++) {
      expect(seq.nextPosition(l)).toBe(0);
      expect(Array.from(seq.lengths(l))).toEqual([0, 0]);
      const r = seq.read(l, 1);
      expect([r.keys.length, r.values.length, r.beta.length, r.positions.length]).toEqual([0, 0, 0, 0]);
    }
    expect(cache.stats().sequences).toBe(1);
    cache.dispose();
  });

  for (const storage of STORAGES) {
    it(`${storage}: T = 1, 15, 16, 17, 100 appended in a row round-trip bit-exactly (blockSize 16)`, () => {
      const rng = testRng();
      const { cache, seq, shadow, shape } = setup(storage, storage);
      for (const T of [1, 15, 16, 17, 100]) {
        for (const layer of [0, 1]) {
          const { keys, values } = randomRows(rng, shape, T);
          seq.append(layer, keys, values);
          shadow.append(layer, keys, values);
        }
        shadow.expectMatches(seq, `${storage} after T = ${T}`);
      }
      expect(seq.length(0, 0)).toBe(149);
      expect(seq.nextPosition(1)).toBe(149);
      cache.dispose();
    });

    it(`${storage}: rounding ties, range edges and subnormals, head_dim 64 and 128`, () => {
      const rng = testRng();
      for (const headDim of [64, 128]) {
        const { cache, seq, shadow, shape } = setup(storage, storage, headDim, 16);
        const T = 19;
        const n = T * shape.kvHeads * headDim;
        const keys = tieInputs(n, rng);
        const values = tieInputs(n, rng).reverse();
        seq.append(0, keys, values);
        shadow.append(0, keys, values);
        shadow.expectMatches(seq, `${storage} ties, head_dim ${headDim}`);
        cache.dispose();
      }
    });

    it(`${storage}: Uint16Array (f16 bits) input`, () => {
      const rng = testRng();
      const { cache, seq, shadow, shape } = setup(storage, storage, 64);
      for (const T of [3, 17]) {
        const n = T * shape.kvHeads * shape.headDim;
        // f16 bits of the range edges include ±Inf, which append rejects: saturate those.
        const keys = toF16Bits(tieInputs(n, rng)).map((h) => ((h & 0x7c00) === 0x7c00 ? (h & 0x8000) | 0x7bff : h));
        const values = toF16Bits(randn(rng, n, 100));
        seq.append(0, keys, values);
        shadow.append(0, keys, values);
      }
      shadow.expectMatches(seq, `${storage} from f16 bits`);
      cache.dispose();
    });
  }

  it('keys and values choose their storage separately', () => {
    const rng = testRng();
    const pairs: [PlainStorage, PlainStorage][] = [['f16', 'bf16'], ['bf16', 'f16'], ['f32', 'f16'], ['bf16', 'f32']];
    for (const [k, v] of pairs) {
      const { cache, seq, shadow, shape } = setup(k, v, 64);
      const T = 21;
      const keys = tieInputs(T * shape.kvHeads * shape.headDim, rng);
      const values = tieInputs(T * shape.kvHeads * shape.headDim, rng);
      seq.append(1, keys, values);
      shadow.append(1, keys, values);
      shadow.expectMatches(seq, `keys ${k}, values ${v}`);
      expect(cache.config.keys).toBe(k);
      expect(cache.config.values).toBe(v);
      cache.dispose();
    }
  });

  it('structured input (arange) lands in the right row, head and column', () => {
    // element (t, h, d) of the token-major input holds t*kvHeads*D + h*D + d, so any transposition shows up
    const { cache, seq, shadow, shape } = setup('f32', 'f32', 8);
    const T = 33;
    const n = T * shape.kvHeads * shape.headDim;
    seq.append(0, arange(n), arange(n, 0.5, -1));
    shadow.append(0, arange(n), arange(n, 0.5, -1));
    shadow.expectMatches(seq, 'arange');
    // worked example: kv head 1, row 2, column 3 -> 2*16 + 8 + 3 = 43
    expect(seq.read(0, 1).keys[2 * 8 + 3]).toBe(43);
    cache.dispose();
  });

  it('explicit positions (Int32Array and number[]) and nextPosition', () => {
    const rng = testRng();
    const { cache, seq, shadow, shape } = setup('f16', 'f16');
    const a = randomRows(rng, shape, 3);
    seq.append(0, a.keys, a.values, { positions: new Int32Array([10, 11, 15]) });
    shadow.append(0, a.keys, a.values, [10, 11, 15]);
    expect(seq.nextPosition(0)).toBe(16);
    expect(seq.nextPosition(1)).toBe(0); // layers keep their own positions
    const b = randomRows(rng, shape, 2);
    seq.append(0, b.keys, b.values); // defaults continue at 16, 17
    shadow.append(0, b.keys, b.values);
    const c = randomRows(rng, shape, 2);
    seq.append(0, c.keys, c.values, { positions: [100, 200] });
    shadow.append(0, c.keys, c.values, [100, 200]);
    const d = randomRows(rng, shape, 18);
    seq.append(1, d.keys, d.values, { positions: Array.from({ length: 18 }, (_, i) => 7 + 2 * i) });
    shadow.append(1, d.keys, d.values, Array.from({ length: 18 }, (_, i) => 7 + 2 * i));
    shadow.expectMatches(seq, 'explicit positions');
    expect(Array.from(seq.read(0, 1).positions)).toEqual([10, 11, 15, 16, 17, 100, 200]);
    expect(seq.nextPosition(0)).toBe(201);
    expect(seq.nextPosition(1)).toBe(7 + 2 * 17 + 1);
    cache.dispose();
  });

  it('read returns copies: writing into them does not change the cache', () => {
    const rng = testRng();
    const { cache, seq, shadow, shape } = setup('f32', 'f32');
    const a = randomRows(rng, shape, 5);
    seq.append(0, a.keys, a.values);
    shadow.append(0, a.keys, a.values);
    a.keys.fill(0); // the input buffer is not kept either
    const r = seq.read(0, 0);
    r.keys.fill(123);
    r.values.fill(123);
    r.positions.fill(9);
    shadow.expectMatches(seq, 'after scribbling on read() output and input');
    cache.dispose();
  });
});
