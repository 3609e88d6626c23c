// CRC-32 (zlib's: reflected polynomial 0xEDB88320) of a concatenation from the CRCs of its
// pieces: crc(A || B) = crc(A) · x^(8·|B|) ⊕ crc(B) in GF(2)[x] modulo the polynomial. Lets a
// join checksum each piece while it is in cache, in whatever order the pieces arrive, and
// combine the results in output order at the end (a few microseconds per piece) instead of
// reading the whole output again.
const POLY = 0xedb88320;
/** x^0 in the reflected representation (bit 31 is the constant term). */
const ONE = 0x80000000;

/** a · b modulo the polynomial (both reflected). */
function multiply(a: number, b: number): number {
  let product = 0;
  for (let bit = ONE; a !== 0 && bit !== 0; bit >>>= 1) {
    if (a & bit) {
      product ^= b;
      a ^= bit;
    }
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return product >>> 0;
}

/** x^(2^k) for k = 0..63 (x^(2^k) repeats with period dividing 2^32 - 1, but 64 covers every length below 2^61 bits). */
const X_POW_2K: number[] = [];
for (let k = 0, p = ONE >>> 1; k < 64; k++, p = multiply(p, p)) X_POW_2K.push(p);

/** x^(8·bytes): the factor that moves a CRC past `bytes` appended bytes. */
function shiftFor(bytes: number): number {
  let p = ONE;
  let k = 3; // 8·bytes = bytes · 2^3
  for (let n = bytes; n > 0; n = Math.floor(n / 2), k++) if (n % 2 === 1) p = multiply(X_POW_2K[k]!, p);
  return p;
}

/**
 * Multiplication by a fixed factor, as four tables of 256 (the product is linear in the
 * other operand, so it is the XOR of the products of its four bytes): four lookups instead
 * of a 32-step loop, for the many pieces of the same length a join combines.
 */
function multiplierBy(factor: number): (c: number) => number {
  const t = new Uint32Array(1024);
  for (let k = 0; k < 4; k++) for (let v = 0; v < 256; v++) t[256 * k + v] = multiply(factor, (v << (8 * k)) >>> 0);
  return (c) => t[c & 255]! ^ t[256 + ((c >>> 8) & 255)]! ^ t[512 + ((c >>> 16) & 255)]! ^ t[768 + (c >>> 24)]!;
}

/** Combines CRCs of consecutive pieces; the shift of each piece length is built once. */
export class Crc32Combiner {
  readonly #shifts = new Map<number, (c: number) => number>();
  crc = 0;

  /** Appends a piece of `bytes` bytes whose own CRC-32 is `crc`. */
  append(crc: number, bytes: number): void {
    if (bytes === 0) return;
    let shift = this.#shifts.get(bytes);
    if (shift === undefined) this.#shifts.set(bytes, (shift = multiplierBy(shiftFor(bytes))));
    this.crc = (shift(this.crc) ^ crc) >>> 0;
  }
}
