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

/** Combines CRCs of consecutive pieces; the shift of each piece length is computed once. */
export class Crc32Combiner {
  readonly #shifts = new Map<number, number>();
  crc = 0;

  /** Appends a piece of `bytes` bytes whose own CRC-32 is `crc`. */
  append(crc: number, bytes: number): void {
    if (bytes === 0) return;
    let shift = this.#shifts.get(bytes);
    if (shift === undefined) this.#shifts.set(bytes, (shift = shiftFor(bytes)));
    this.crc = (multiply(shift, this.crc) ^ crc) >>> 0;
  }
}
