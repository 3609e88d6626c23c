// A small model of what a KVCache must hold, for the random-operation test: per sequence and
// stream the rows as the reference formats predict them (plain formats bit-exact; quantized
// or rotated formats within a per-row bound), their positions and beta, nextPosition per
// layer, and the pool's blocks with reference counts (fork shares blocks, a write into a
// shared partial block copies it), so stats().blocksUsed is predicted exactly.
import { storedValues, type PlainStorage } from '../reference/formats-reference';

export type Storage = PlainStorage | 'int8' | 'int4';

export interface ModelConfig {
  layers: number;
  kvHeads: number;
  headDim: number;
  queryHeads: number;
  blockSize: number;
  keys: Storage;
  values: Storage;
  groupSize: number;
  rotate: boolean;
}

export class Block {
  refs = 1;
}

export interface Row {
  k: Float32Array; // expected stored keys (exact for plain, unrotated formats), [D]
  v: Float32Array;
  pos: number;
  beta: number;
}

export interface MStream {
  rows: Row[];
  blocks: Block[];
}

export interface MSeq {
  streams: MStream[]; // [layer * kvHeads + head]
  next: number[]; // [layer]
}

/** The maximum per-element error of a read-back row against the input row, relative to the row's max |x|. */
export function rowTolerance(storage: Storage, rotated: boolean): number {
  const base = storage === 'int8' ? 0.0045 : storage === 'int4' ? 0.075 : storage === 'f32' ? 0 : storage === 'f16' ? 0.0005 : 0.004;
  // A rotated row is stored in the Hadamard basis (its entries up to sqrt(D)x smaller or larger)
  // and rotated back in float32 on read.
  return rotated ? base * 4 + 1e-6 : base;
}

export class CacheModel {
  readonly seqs = new Map<object, MSeq>();
  constructor(readonly c: ModelConfig, readonly capacity: number) {}

  /** Distinct live blocks. */
  blocksUsed(): number {
    const seen = new Set<Block>();
    for (const s of this.seqs.values()) for (const st of s.streams) for (const b of st.blocks) seen.add(b);
    return seen.size;
  }

  rows(): number {
    let n = 0;
    for (const s of this.seqs.values()) for (const st of s.streams) n += st.rows.length;
    return n;
  }

  create(key: object): void {
    const { layers, kvHeads } = this.c;
    this.seqs.set(key, { streams: Array.from({ length: layers * kvHeads }, () => ({ rows: [], blocks: [] })), next: new Array(layers).fill(0) });
  }

  /** Blocks an append of T rows to every stream of a layer needs: [without, with] copy-on-write of a shared partial block. */
  appendCost(key: object, layer: number, T: number): number {
    const s = this.seqs.get(key)!;
    const B = this.c.blockSize;
    let need = 0;
    for (let h = 0; h < this.c.kvHeads; h++) {
      const st = s.streams[layer * this.c.kvHeads + h]!;
      const n = st.rows.length;
      need += Math.ceil((n + T) / B) - Math.ceil(n / B);
      if (n % B !== 0 && st.blocks[st.blocks.length - 1]!.refs > 1) need += 1;
    }
    return need;
  }

  append(key: object, layer: number, keys: Float32Array | Uint16Array, values: Float32Array | Uint16Array, positions: number[]): void {
    const s = this.seqs.get(key)!;
    const { kvHeads, headDim: D, blockSize: B } = this.c;
    const exact = (st: Storage, x: Float32Array | Uint16Array): Float32Array =>
      st === 'int8' || st === 'int4' ? storedValues('f32', x) : storedValues(st, x);
    const k = exact(this.c.keys, keys);
    const v = exact(this.c.values, values);
    const T = positions.length;
    for (let h = 0; h < kvHeads; h++) {
      const st = s.streams[layer * kvHeads + h]!;
      const n = st.rows.length;
      if (n % B !== 0 && st.blocks[st.blocks.length - 1]!.refs > 1) {
        st.blocks[st.blocks.length - 1]!.refs--;
        st.blocks[st.blocks.length - 1] = new Block();
      }
      for (let t = 0; t < T; t++) {
        const o = (t * kvHeads + h) * D;
        st.rows.push({ k: k.slice(o, o + D), v: v.slice(o, o + D), pos: positions[t]!, beta: 0 });
      }
      while (st.blocks.length < Math.ceil(st.rows.length / B)) st.blocks.push(new Block());
    }
    s.next[layer] = positions[T - 1]! + 1;
  }

  fork(parent: object, child: object): void {
    const p = this.seqs.get(parent)!;
    for (const st of p.streams) for (const b of st.blocks) b.refs++;
    this.seqs.set(child, {
      streams: p.streams.map((st) => ({ rows: st.rows.slice(), blocks: st.blocks.slice() })),
      next: p.next.slice(),
    });
  }

  private release(blocks: Block[]): void {
    for (const b of blocks) b.refs--;
  }

  /** Drops every row at position >= n (rows are kept in position order by every operation here). */
  truncate(key: object, n: number): void {
    const s = this.seqs.get(key)!;
    const B = this.c.blockSize;
    for (const st of s.streams) {
      let T = st.rows.length;
      while (T > 0 && st.rows[T - 1]!.pos >= n) T--;
      st.rows.length = T;
      this.release(st.blocks.splice(Math.ceil(T / B)));
    }
    s.next = s.next.map((x) => Math.min(x, n));
  }

  /**
   * A stream rebuilt with `rows` (eviction, compaction): fresh blocks unless nothing changed.
   * Eviction (`keep` given: the old index of every kept row) keeps an old block instead of
   * copying it when a rebuilt block is exactly that block, row for row (Cache::keepRows kMove);
   * compaction rewrites values, so all its blocks are fresh.
   */
  replaceRows(key: object, index: number, rows: Row[], changed: boolean, keep?: number[]): void {
    const st = this.seqs.get(key)!.streams[index]!;
    st.rows = rows;
    if (!changed) return;
    const B = this.c.blockSize;
    const old = st.blocks;
    st.blocks = Array.from({ length: Math.ceil(rows.length / B) }, (_, b) => {
      if (keep) {
        const first = b * B;
        const n = Math.min(B, rows.length - first);
        if (keep[first]! % B === 0 && keep[first + n - 1] === keep[first]! + n - 1) {
          const reused = old[keep[first]! / B]!;
          reused.refs++;
          return reused;
        }
      }
      return new Block();
    });
    this.release(old);
  }

  free(key: object): void {
    const s = this.seqs.get(key)!;
    for (const st of s.streams) this.release(st.blocks);
    this.seqs.delete(key);
  }

  /** An imported copy: the same rows in fresh blocks. */
  importCopy(from: object, to: object): void {
    const s = this.seqs.get(from)!;
    this.seqs.set(to, {
      streams: s.streams.map((st) => ({
        rows: st.rows.slice(),
        blocks: Array.from({ length: Math.ceil(st.rows.length / this.c.blockSize) }, () => new Block()),
      })),
      next: s.next.slice(),
    });
  }

  /** Blocks a full import of this sequence needs. */
  importCost(key: object): number {
    let n = 0;
    for (const st of this.seqs.get(key)!.streams) n += Math.ceil(st.rows.length / this.c.blockSize);
    return n;
  }
}
