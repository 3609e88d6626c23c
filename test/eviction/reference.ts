// Plain TypeScript references of eviction: row scores of each policy (float64), the
// protected-then-top-k selection with its tie rule (a full sort, not a selection algorithm),
// budget shares (apportion, pyramid), Ada-KV allocation, and attention probabilities for the
// accumulated-scores check. Written from the documented rules, not from the native code.

/** One stream as the references see it. */
export interface RefStream {
  keys: ArrayLike<number>; // [n, D]
  beta?: ArrayLike<number>; // [n]
  n: number;
}

/** Softmax probabilities of each query over all rows, averaged over the queries (float64). */
export function meanAttention(s: RefStream, D: number, queries: ArrayLike<number>[]): Float64Array {
  const mean = new Float64Array(s.n);
  const scale = 1 / Math.sqrt(D);
  const logits = new Float64Array(s.n);
  for (const q of queries) {
    let max = -Infinity;
    for (let r = 0; r < s.n; r++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[d]! * s.keys[r * D + d]!;
      logits[r] = dot * scale + (s.beta ? s.beta[r]! : 0);
      max = Math.max(max, logits[r]!);
    }
    let sum = 0;
    for (let r = 0; r < s.n; r++) sum += Math.exp(logits[r]! - max);
    for (let r = 0; r < s.n; r++) mean[r] = mean[r]! + Math.exp(logits[r]! - max) / sum / queries.length;
  }
  return mean;
}

/** Max-pool with an odd kernel over [begin, end) only. */
export function maxPool(x: ArrayLike<number>, begin: number, end: number, pool: number, out: Float64Array): void {
  const half = (pool - 1) / 2;
  for (let r = begin; r < end; r++) {
    let m = -Infinity;
    for (let i = Math.max(begin, r - half); i <= Math.min(end - 1, r + half); i++) m = Math.max(m, x[i]!);
    out[r] = m;
  }
}

/** Split a [m, D] array into its m vectors. */
export function vectors(a: ArrayLike<number>, D: number): Float64Array[] {
  const out: Float64Array[] = [];
  for (let i = 0; i + D <= a.length; i += D) out.push(Float64Array.from({ length: D }, (_, d) => a[i + d]!));
  return out;
}

/** SnapKV: the newest window × group recorded vectors (recent ring, oldest first), pooled. */
export function snapKVScores(s: RefStream, D: number, recent: Float64Array[], window: number, group: number, pool: number): Float64Array {
  const used = recent.slice(Math.max(0, recent.length - window * group));
  const mean = meanAttention(s, D, used);
  const out = new Float64Array(s.n);
  const prefix = s.n - Math.min(s.n, window);
  maxPool(mean, 0, prefix, pool, out);
  maxPool(mean, prefix, s.n, pool, out);
  return out;
}

/** TOVA: the newest `group` recorded vectors (the last query token's heads). */
export function tovaScores(s: RefStream, D: number, recent: Float64Array[], group: number): Float64Array {
  return meanAttention(s, D, recent.slice(Math.max(0, recent.length - group)));
}

export function keyNormScores(s: RefStream, D: number): Float64Array {
  const out = new Float64Array(s.n);
  for (let r = 0; r < s.n; r++) {
    let sq = 0;
    for (let d = 0; d < D; d++) sq += s.keys[r * D + d]! ** 2;
    out[r] = -Math.sqrt(sq);
  }
  return out;
}

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** random(seed): the documented counter-based hash of (seed, stream index, row). */
export function randomScores(seed: number, stream: number, n: number): Float64Array {
  const s = mix32((seed ^ mix32((Math.imul(stream, 0x9e3779b1) + 0x85ebca77) >>> 0)) >>> 0);
  const out = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    const h = mix32((s ^ ((Math.imul(r, 0xc2b2ae3d) + 0x27d4eb2f) >>> 0)) >>> 0);
    out[r] = (h >>> 8) / 16777216;
  }
  return out;
}

export function recencyScores(n: number): Float64Array {
  return Float64Array.from({ length: n }, (_, r) => r);
}

/** Order of candidates: higher score first, then lower index (the tie rule). NaN lowest. */
function better(scores: ArrayLike<number>, a: number, b: number): number {
  const sa = Number.isNaN(scores[a]) ? -Infinity : scores[a]!;
  const sb = Number.isNaN(scores[b]) ? -Infinity : scores[b]!;
  if (sa !== sb) return sb > sa ? 1 : -1;
  return a - b;
}

/** Protected rows, in priority order: sinks first, then the newest of the recent window. */
export function protectedOrder(n: number, sinks: number, recent: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < Math.min(sinks, n); r++) out.push(r);
  for (let i = 0; i < Math.min(recent, n); i++) {
    const r = n - 1 - i;
    if (!out.includes(r)) out.push(r);
  }
  return out;
}

/** Mark `keep` rows: protected first (in priority order), then the best scores. Returns the mask. */
export function selectInto(scores: ArrayLike<number>, n: number, keep: number, sinks: number, recent: number, mask: Uint8Array): void {
  let taken = 0;
  for (const r of protectedOrder(n, sinks, recent)) {
    if (taken >= keep) break;
    mask[r] = 1;
    taken++;
  }
  const rest = Array.from({ length: n }, (_, r) => r).filter((r) => !mask[r]).sort((a, b) => better(scores, a, b));
  for (const r of rest.slice(0, keep - taken)) mask[r] = 1;
}

/** The rows a stream keeps, ascending. */
export function selectRows(scores: ArrayLike<number>, keep: number, sinks: number, recent: number): number[] {
  const n = scores.length;
  const mask = new Uint8Array(n);
  selectInto(scores, n, Math.min(keep, n), sinks, recent, mask);
  return Array.from({ length: n }, (_, r) => r).filter((r) => mask[r]);
}

/** Water-filling apportionment with largest remainder (the documented budget arithmetic). */
export function apportion(total: number, weights: number[], caps: number[]): number[] {
  const n = weights.length;
  const x = new Array<number>(n).fill(0);
  const active = weights.map((w, i) => caps[i]! > 0 && w > 0);
  let remaining = total;
  for (;;) {
    let W = 0;
    for (let i = 0; i < n; i++) if (active[i]) W += weights[i]!;
    if (W <= 0) break;
    let clipped = false;
    const rem = remaining;
    for (let i = 0; i < n; i++) {
      if (active[i] && (rem * weights[i]!) / W >= caps[i]!) {
        x[i] = caps[i]!;
        active[i] = false;
        remaining -= caps[i]!;
        clipped = true;
      }
    }
    if (!clipped) {
      for (let i = 0; i < n; i++) if (active[i]) x[i] = (rem * weights[i]!) / W;
      break;
    }
  }
  const out = x.map((v, i) => Math.min(caps[i]!, Math.floor(v)));
  let sum = out.reduce((a, b) => a + b, 0);
  while (sum !== total) {
    const up = sum < total;
    let best = -1;
    let bestFrac = 0;
    for (let i = 0; i < n; i++) {
      if (up ? out[i]! >= caps[i]! || weights[i]! <= 0 : out[i]! <= 0) continue;
      const frac = x[i]! - out[i]!;
      if (best < 0 || (up ? frac > bestFrac : frac < bestFrac)) {
        best = i;
        bestFrac = frac;
      }
    }
    if (best < 0) break;
    out[best]! += up ? 1 : -1;
    sum += up ? 1 : -1;
  }
  return out;
}

export interface RefBudget {
  keep?: number;
  ratio?: number;
  layers?: readonly number[];
  pyramid?: boolean;
  slope?: number;
}

/** Uniform share of every stream [layers * kvHeads] for the given stream lengths. */
export function shares(lengths: number[], layers: number, kvHeads: number, b: RefBudget): number[] {
  const out = lengths.map((n, i) => {
    const l = Math.floor(i / kvHeads);
    let k: number;
    if (b.keep !== undefined) k = Math.min(n, b.keep);
    else if (b.ratio !== undefined) k = Math.floor(b.ratio * n + 0.5);
    else k = Math.floor(b.layers![l]! * n + 0.5);
    return Math.min(n, Math.max(0, k));
  });
  if (!b.pyramid || layers < 2) return out;
  const slope = b.slope ?? 0.5;
  const total = out.reduce((a, c) => a + c, 0);
  const weights = Array.from({ length: layers }, (_, l) => Math.max(1e-9, 1 + slope * (1 - (2 * l) / (layers - 1))));
  const caps = Array.from({ length: layers }, (_, l) => lengths.slice(l * kvHeads, (l + 1) * kvHeads).reduce((a, c) => a + c, 0));
  const layerTotals = apportion(total, weights, caps);
  for (let l = 0; l < layers; l++) {
    const ls = lengths.slice(l * kvHeads, (l + 1) * kvHeads);
    const heads = apportion(layerTotals[l]!, ls, ls);
    for (let h = 0; h < kvHeads; h++) out[l * kvHeads + h] = heads[h]!;
  }
  return out;
}

/**
 * Ada-KV allocation of one layer: each head keeps its protected rows and at least
 * ceil(safeguard × share) best rows (never more than its share), then the rest of the
 * layer's total goes to the best rows of any head by score / Σ|score| of the head
 * (float32-rounded, as stored), ties: lower head, then lower row. Returns rows per head.
 */
export function adaptiveRows(scores: Float32Array[], layerShares: number[], safeguard: number, sinks: number, recent: number): number[][] {
  const H = scores.length;
  const masks = scores.map((s) => new Uint8Array(s.length));
  let remaining = 0;
  const cand: { score: number; head: number; row: number }[] = [];
  for (let h = 0; h < H; h++) {
    const s = scores[h]!;
    const n = s.length;
    const share = layerShares[h]!;
    const prot = Math.min(n, Math.min(sinks, n) + Math.min(recent, n));
    const guaranteed = Math.min(share, Math.max(Math.ceil(safeguard * share - 1e-9), prot));
    selectInto(s, n, guaranteed, sinks, recent, masks[h]!);
    remaining += share - guaranteed;
    let sum = 0;
    for (let r = 0; r < n; r++) sum += Math.abs(s[r]!);
    const div = Number.isFinite(sum) && sum > 0 ? sum : 1;
    for (let r = 0; r < n; r++) if (!masks[h]![r]) cand.push({ score: Math.fround(s[r]! / div), head: h, row: r });
  }
  cand.sort((a, b) => (a.score !== b.score ? b.score - a.score : a.head !== b.head ? a.head - b.head : a.row - b.row));
  for (const c of cand.slice(0, remaining)) masks[c.head]![c.row] = 1;
  return masks.map((m) => Array.from({ length: m.length }, (_, r) => r).filter((r) => m[r]));
}

/**
 * Attention probability of every row of one stream, summed over the GQA group's query heads
 * and the Tq queries (float64), with the contract's causal rule: query i sits at the position
 * of the i-th of the last Tq rows.
 */
export function attentionMass(
  keys: ArrayLike<number>, positions: ArrayLike<number>, D: number,
  queries: ArrayLike<number>, tq: number, queryHeads: number, group: number, kvHead: number,
): Float64Array {
  const n = positions.length;
  const mass = new Float64Array(n);
  const scale = 1 / Math.sqrt(D);
  const logits = new Float64Array(n);
  for (let i = 0; i < tq; i++) {
    const qpos = positions[n - tq + i]!;
    for (let g = 0; g < group; g++) {
      const qOff = (i * queryHeads + kvHead * group + g) * D;
      let max = -Infinity;
      for (let r = 0; r < n; r++) {
        if (positions[r]! > qpos) {
          logits[r] = -Infinity;
          continue;
        }
        let dot = 0;
        for (let d = 0; d < D; d++) dot += queries[qOff + d]! * keys[r * D + d]!;
        logits[r] = dot * scale;
        max = Math.max(max, logits[r]!);
      }
      let sum = 0;
      for (let r = 0; r < n; r++) if (logits[r] !== -Infinity) sum += Math.exp(logits[r]! - max);
      for (let r = 0; r < n; r++) if (logits[r] !== -Infinity) mass[r] = mass[r]! + Math.exp(logits[r]! - max) / sum;
    }
  }
  return mass;
}
