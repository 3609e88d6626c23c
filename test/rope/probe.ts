// The setup the rope tests share: a stream of T rows at gapped positions followed by P probe
// rows whose queries (leaning to one random direction, so attention is far from uniform) are
// recorded by attention; optionally the probe rows are dropped again, leaving only the log.
import type { Sequence } from '../../lib/index';
import { randn, type Rng } from '../reference/random';
import { gappedPositions } from '../reference/rope-reference';

export interface RopeProbe {
  T: number;
  positions: Int32Array; // [T + P]
  keys: Float32Array; values: Float32Array; // [T][kvHeads][D]
  probeKeys: Float32Array; probeValues: Float32Array; // [P][kvHeads][D]
  dir: Float32Array; // [D]
  probe: Float32Array; // [P][queryHeads][D]
}

export function ropeProbe(rng: Rng, dims: { kvHeads: number; queryHeads: number; D: number }, T: number, P: number,
  lean = { dir: 1, noise: 0.4 }): RopeProbe {
  const { kvHeads, queryHeads, D } = dims;
  const positions = gappedPositions(rng, 3, T + P);
  const keys = randn(rng, T * kvHeads * D), values = randn(rng, T * kvHeads * D);
  const probeKeys = randn(rng, P * kvHeads * D), probeValues = randn(rng, P * kvHeads * D);
  const dir = randn(rng, D, lean.dir);
  const probe = randn(rng, P * queryHeads * D, lean.noise).map((x, i) => x + dir[i % D]!);
  return { T, positions, keys, values, probeKeys, probeValues, dir, probe };
}

/** Appends the rows (then runs `between`), the probe rows, records the probe's queries; `truncate` drops the probe rows. */
export function recordProbe(seq: Sequence, p: RopeProbe, options: { truncate: boolean; between?: (seq: Sequence) => void }): Sequence {
  seq.append(0, p.keys, p.values, { positions: p.positions.subarray(0, p.T) });
  options.between?.(seq);
  seq.append(0, p.probeKeys, p.probeValues, { positions: p.positions.subarray(p.T) });
  seq.attention(0, p.probe, { recordQueries: true });
  if (options.truncate) seq.truncate(p.positions[p.T]!);
  return seq;
}
